"""Parent on /point: the meter that feeds a sub-meter, set by PUT or POST /point, shown by GET /point.

Kept as the parent's id (a rename keeps the link and shows the new name), cleared by an empty value,
never a cycle (400), never a meter of another project (404, as any unknown meter).
"""
import threading
from urllib.parse import urlencode

import pytest


def parents(account):
    return {m["MeterId"]: m["Parent"] for m in account.call("GET", "/point")}


@pytest.fixture
def site(make_account):
    account = make_account()
    for name in ("main", "sub1", "sub2", "leaf"):
        account.call("PUT", "/point", body={"MeterId": name})
    return account


def test_put_and_post_set_parent_and_get_shows_it(site):
    shown = site.call("PUT", "/point", body={"MeterId": "sub1", "Parent": "main"})
    assert shown["Parent"] == "main"
    assert site.call("POST", "/point", body={"name": "sub2", "Parent": "main"})["Parent"] == "main"
    site.call("POST", "/point", body={"name": "leaf", "Parent": "sub1"})
    assert parents(site) == {"main": None, "sub1": "main", "sub2": "main", "leaf": "sub1"}
    assert site.call("GET", "/point", {"name": "leaf"})["Parent"] == "sub1"
    meter = site.call("GET", "/point", {"name": "sub1"})
    assert site.call("GET", "/point", {"id": meter["id"]}) == meter


def test_put_without_parent_keeps_it_and_is_idempotent(site):
    site.call("PUT", "/point", body={"MeterId": "sub1", "Parent": "main"})
    again = site.call("PUT", "/point", body={"MeterId": "sub1", "Parent": "main"})
    agent = site.call("PUT", "/point", body={"MeterId": "sub1", "SaveEvery": 1})   # the agent never sends it
    assert again["Parent"] == agent["Parent"] == "main"


def test_an_empty_value_clears_the_parent(site):
    site.call("POST", "/point", body={"name": "sub1", "Parent": "main"})
    assert site.call("POST", "/point", body={"name": "sub1", "Parent": ""})["Parent"] is None
    site.call("PUT", "/point", body={"MeterId": "sub2", "Parent": "main"})
    assert site.call("PUT", "/point?" + urlencode({"MeterId": "sub2", "Parent": " "}))["Parent"] is None
    assert parents(site) == {"main": None, "sub1": None, "sub2": None, "leaf": None}


def test_renaming_the_parent_keeps_the_link_and_shows_the_new_name(site):
    site.call("POST", "/point", body={"name": "sub1", "Parent": "main"})
    site.call("POST", "/point", body={"name": "main", "new": "Main incomer"})
    assert parents(site)["sub1"] == "Main incomer"
    assert site.call("GET", "/point", {"name": "sub1"})["Parent"] == "Main incomer"
    # a rename and a parent in one call
    shown = site.call("POST", "/point", body={"name": "sub2", "new": "Suite 2", "Parent": "Main incomer"})
    assert (shown["MeterId"], shown["Parent"]) == ("Suite 2", "Main incomer")


def test_a_new_meter_can_be_registered_with_its_parent(site):
    shown = site.call("PUT", "/point", body={"MeterId": "sub3", "Parent": "main"})
    assert shown["Parent"] == "main"


def test_cycles_are_400_and_change_nothing(site):
    site.call("POST", "/point", body={"name": "sub1", "Parent": "main"})
    site.call("POST", "/point", body={"name": "leaf", "Parent": "sub1"})
    before = parents(site)
    for name, parent in (("main", "leaf"), ("main", "sub1"), ("sub1", "sub1"), ("sub1", "leaf")):
        error = site.call("POST", "/point", body={"name": name, "Parent": parent}, status=400)["error"]
        assert "Parent" in error and "feed itself" in error, error
    error = site.call("PUT", "/point", body={"MeterId": "main", "Parent": "leaf"}, status=400)["error"]
    assert "feed itself" in error
    # a rename with a cycle renames nothing either
    site.call("POST", "/point", body={"name": "main", "new": "Renamed", "Parent": "leaf"}, status=400)
    assert parents(site) == before


def test_unknown_parent_and_another_projects_meter_are_404(site, make_account):
    other = make_account()
    other.call("PUT", "/point", body={"MeterId": "theirs"})
    for parent in ("nope", "theirs"):
        error = site.call("POST", "/point", body={"name": "sub1", "Parent": parent}, status=404)["error"]
        assert error == f"Parent: no meter named {parent!r} in this project"
        site.call("PUT", "/point", body={"MeterId": "sub1", "Parent": parent}, status=404)
    # nothing is created when the parent is unknown
    site.call("PUT", "/point", body={"MeterId": "newcomer", "Parent": "theirs"}, status=404)
    assert "newcomer" not in parents(site)
    assert set(parents(site).values()) == {None}


def test_bad_parent_values_and_a_post_with_nothing_to_change_are_400(site):
    for body in ({"name": "sub1", "Parent": 5}, {"name": "sub1", "Parent": "a\x00b"}, {"name": "sub1"}):
        assert site.call("POST", "/point", body=body, status=400)["error"], body


def test_get_point_renders_parent_in_xml(site):
    site.call("POST", "/point", body={"name": "sub1", "Parent": "main"})
    xml = site.request("GET", "/point?name=sub1&responseType=xml").body.decode()
    assert '<Parent type="str">main</Parent>' in xml
    xml = site.request("GET", "/point?name=main&responseType=xml").body.decode()
    assert '<Parent type="null"></Parent>' in xml


def test_concurrent_changes_never_build_a_cycle(site, serialized_aws):
    """a → b and b → a at the same time: one wins, the other is 400 (or 409), never both."""
    from chalicelib.metering import meters

    project = site.view["project"]
    for _round in range(6):
        for name in ("sub1", "sub2"):
            meters.change(project, name=name, parent="")
        barrier = threading.Barrier(2)
        outcomes = []

        def set_parent(name, parent):
            barrier.wait()
            try:
                meters.change(project, name=name, parent=parent)
                outcomes.append("ok")
            except Exception as error:  # noqa: BLE001 - the API error is what we record
                outcomes.append(type(error).__name__)

        threads = [threading.Thread(target=set_parent, args=pair) for pair in (("sub1", "sub2"), ("sub2", "sub1"))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        shown = {m["MeterId"]: m["Parent"] for m in meters.point(project).build()}  # type: ignore[union-attr]  # all: a list
        assert not (shown["sub1"] == "sub2" and shown["sub2"] == "sub1"), (outcomes, shown)
        assert outcomes.count("ok") >= 1
