"""AccountsTable: its name and the key of every kind of item it holds.

Keys are (pk, sk) strings. Each item kind's fields belong to the module named beside it:

| item | pk | sk | fields owned by |
|---|---|---|---|
| project | `PROJECT#<project>` | `PROJECT` | accounts |
| project name (unique) | `PROJECTNAME#<login key of the name>` | `PROJECTNAME` | accounts |
| user account | `PROJECT#<project>` | `USER#<user, 10 digits>` | accounts |
| login name (unique) | `LOGIN#<login key>` | `LOGIN` | accounts |
| account key lookup | `KEY#<sha256 of the key>` | `KEY` | accounts |
| login throttle of a name | `THROTTLE#<login key>` | `THROTTLE` | throttle |
| password throttle of an account | `USERTHROTTLE#<user>` | `THROTTLE` | throttle |
| scoped key lookup | `SCOPEDKEY#<sha256 of the key>` | `SCOPEDKEY` | scoped_keys |
| scoped key listing | `PROJECT#<project>` | `SCOPEDKEY#<key id, 10 digits>` | scoped_keys |
| scoped key count | `PROJECT#<project>` | `COUNT#scopedkeys` | scoped_keys (n) |
| edge agent's report | `PROJECT#<project>` | `AGENT#<who>` | status |
| export job | `JOB#<job id>` | `JOB` | export_jobs |
| a project's running export jobs | `PROJECT#<project>` | `JOBS` | export_jobs (running, version) |
| id counter | `COUNTER` | `<kind>` | this module (next_id) |

The items of a project's partition are listed by the kind their sort key starts with (project_items).
"""
from collections.abc import Iterator

from chalicelib.platform import db, validation
from chalicelib.platform.db import Item

NAME = "AccountsTable"

# Kinds of the items a project's partition lists (project_items): the sort key's prefix.
USER = "USER"
SCOPED_KEY = "SCOPEDKEY"
AGENT = "AGENT"


def project_pk(project_id: int) -> str:
    """The partition of a project's items (project, users, scoped keys, agents)."""
    return f"PROJECT#{project_id}"


def project_key(project_id: int) -> Item:
    return {"pk": project_pk(project_id), "sk": "PROJECT"}


def project_name_key(name: str) -> Item:
    """The item that keeps project names unique (case-insensitively, as login names)."""
    return {"pk": "PROJECTNAME#" + validation.login_key(name), "sk": "PROJECTNAME"}


def user_key(project_id: int, user_id: int) -> Item:
    return {"pk": project_pk(project_id), "sk": f"{USER}#{user_id:010d}"}


def login_name_key(username: str) -> Item:
    """The item that keeps login names unique across every project and finds an account by its name."""
    return {"pk": "LOGIN#" + validation.login_key(username), "sk": "LOGIN"}


def api_key_key(digest: str) -> Item:
    """The item that finds an account by the digest of its key."""
    return {"pk": "KEY#" + digest, "sk": "KEY"}


def throttle_key(username: str) -> Item:
    """The item counting password guesses of a login name (stripped like accounts.find_login: " alice" is "alice")."""
    return {"pk": "THROTTLE#" + validation.login_key(username.strip()), "sk": "THROTTLE"}


def account_throttle_key(user_id: int) -> Item:
    """The item counting the passwords verified against an account (by login or current_password)."""
    return {"pk": f"USERTHROTTLE#{user_id}", "sk": "THROTTLE"}


def scoped_key_lookup_key(digest: str) -> Item:
    """The item that finds a scoped key by its digest."""
    return {"pk": f"{SCOPED_KEY}#" + digest, "sk": SCOPED_KEY}


def scoped_key_listing_key(project_id: int, key_id: int) -> Item:
    """The item that lists a scoped key in its project."""
    return {"pk": project_pk(project_id), "sk": f"{SCOPED_KEY}#{key_id:010d}"}


def scoped_key_count_key(project_id: int) -> Item:
    """The item counting the project's scoped keys (scoped_keys.MAX_KEYS), changed in each key's transaction."""
    return {"pk": project_pk(project_id), "sk": "COUNT#scopedkeys"}


def agent_key(project_id: int, who: str) -> Item:
    """The item holding an agent's last report."""
    return {"pk": project_pk(project_id), "sk": f"{AGENT}#{who}"}


def agent_of(item: Item) -> str:
    """The `who` of an agent's report item (what agent_key was given)."""
    return item["sk"][len(AGENT) + 1:]


def job_key(job_id: str) -> Item:
    """The item of an export job."""
    return {"pk": f"JOB#{job_id}", "sk": "JOB"}


def project_jobs_key(project_id: int) -> Item:
    """The item holding a project's running export jobs (export_jobs.MAX_RUNNING)."""
    return {"pk": project_pk(project_id), "sk": "JOBS"}


def next_id(kind: str) -> int:
    """A new integer id of a kind (user, project, meter, scoped_key): an atomic counter, never reused."""
    answer = db.update(NAME, {"pk": "COUNTER", "sk": kind}, "ADD #v :one",
                       names={"#v": "value"}, expression_values={":one": 1}, return_values="UPDATED_NEW")
    return int(answer["value"])


def project_items(project_id: int, kind: str, consistent: bool = False) -> Iterator[Item]:
    """The project's items of a kind (USER, SCOPED_KEY, AGENT), in key order."""
    return db.query(NAME, "pk = :p AND begins_with(sk, :k)", {":p": project_pk(project_id), ":k": kind + "#"},
                    consistent=consistent)
