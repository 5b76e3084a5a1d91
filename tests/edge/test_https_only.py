"""The key goes to the configured host only: redirects are refused, never followed,
and plain http:// is accepted for loopback only."""

import io
import time

import pytest

from conftest import KEY, meter, write_config
from edge_agent import cli, log
from edge_agent.clock import FakeClock, iso
from edge_agent.cloud import Cloud
from edge_agent.config import ConfigError, load_config
from edge_agent.outbox import Outbox, Reading, Take
from edge_agent.sender import Sender
from http_support import ScriptedAPI

BUS = {"LAN1": {"type": "tcp", "host": "127.0.0.1", "port": 1}}


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_refused_and_the_key_never_leaves(tmp_path, status):
    thief = ScriptedAPI(lambda *a: (200, {}, {"accepted": 1, "duplicates": 0, "rejected": []}))
    front = ScriptedAPI(lambda m, p, h, b: (status, {"Location": thief.url + p + "?token=abc"}, {"error": "moved"}))
    buf = io.StringIO()
    log.setup("INFO", stream=buf)
    log.register_secret(KEY)
    try:
        cfg = load_config(write_config(tmp_path, [meter("a", 1, "LAN1")], BUS, url=front.url))
        ob = Outbox(cfg.buffer)
        ob.record_poll([Take("a", "", Reading("a", iso(time.time() // 300 * 300 - 600), 1.0))])
        s = Sender(ob, Cloud(cfg.url, KEY, 5), cfg.meters, clock=FakeClock())
        assert s.step() > 0  # PUT /point redirected: refused, retried later
        s.to_register.clear()  # suppose the meter is known: POST /data is redirected too
        assert s.step() > 0
        assert thief.requests == []  # nothing, and so no key, ever reached the other host
        assert [r[0] + " " + r[1] for r in front.requests] == ["PUT /point", "POST /data"]
        st = ob.status()
        assert st["pending"] == 1 and st["dead_letters"] == 0
        text = buf.getvalue()
        assert text.count("event=redirect_refused") == 2
        assert f"status={status}" in text and f"location={thief.url}/data" in text
        assert "token=abc" not in text and KEY not in text
    finally:
        log.setup("WARNING")
        thief.close()
        front.close()


@pytest.mark.parametrize("url", ["http://api.example.com", "http://192.168.1.10:8000", "http://10.0.0.1",
                                 "http://[2001:db8::1]:80", "http://127.0.0.1.example.com"])
def test_plain_http_to_another_host_is_a_config_error_naming_the_rule(tmp_path, url, capsys):
    p = write_config(tmp_path, [meter("a", 1, "LAN1")], BUS, url=url)
    with pytest.raises(ConfigError, match=r"http:// is allowed only for a loopback host.*use https://"):
        load_config(p)
    assert cli.main(["check", "-c", str(p)]) == 2
    err = capsys.readouterr().err
    assert "field 'url'" in err and "loopback" in err and KEY not in err


@pytest.mark.parametrize("url", ["https://api.example.com", "https://api.example.com/prod/", "http://127.0.0.1:8000",
                                 "http://localhost:8000", "http://[::1]:8000", "http://127.1.2.3"])
def test_https_and_loopback_http_are_accepted(tmp_path, url):
    assert load_config(write_config(tmp_path, [meter("a", 1, "LAN1")], BUS, url=url)).url == url.rstrip("/")


@pytest.mark.parametrize("url,rule", [("ftp://api.example.com", "https://"),
                                      ("https://user:pw@api.example.com", "credentials"),
                                      ("https://api.example.com/?key=1", r"without \?query"),
                                      ("https://api.example.com:99999", "not a valid URL")])
def test_other_bad_urls(tmp_path, url, rule):
    with pytest.raises(ConfigError, match=rule):
        load_config(write_config(tmp_path, [meter("a", 1, "LAN1")], BUS, url=url))
