"""The Intellimeter API's routes: each parses its arguments, calls one function of chalicelib, returns the result.

Rendering (responseType), authentication, errors and the access log are chalicelib/platform/web.py's.
The contract is docs/API.md (a copy of the shared spec) and docs/openapi.yaml.
"""
from chalice import Chalice

from chalicelib.billing import bills, tariffs
from chalicelib.identity import accounts, auth, scoped_keys
from chalicelib.metering import consumption, ingest, meters, status
from chalicelib.outputs import charts, export_jobs, exports
from chalicelib.platform.web import Api

app = Chalice(app_name="intellimeter-api")
api = Api(app, auth.authenticate)


# ---- /session ---------------------------------------------------------------------------------

@api.route("/session", "GET")
def get_session(call):
    return accounts.account(call.project_id, call.user_id)


@api.route("/session", "PUT", authenticated=False, secret=True)
def log_in(call):
    login = auth.login(username=call.get("username"), password=call.get("password"), key=call.get("key"))
    call.set_session_cookie(login.token)
    return login.answer


@api.route("/session", "DELETE")
def log_out(call):
    auth.logout(call.request_cookies)
    call.set_session_cookie(None)
    return {}


# ---- /key -------------------------------------------------------------------------------------

@api.route("/key", "GET", secret=True)
def get_key(call):
    return accounts.current_key(call.project_id, call.user_id)


@api.route("/key", "POST", secret=True)
def new_key(call):
    return accounts.regenerate_key(call.project_id, call.user_id)


# ---- /user ------------------------------------------------------------------------------------

@api.route("/user", "GET")
def list_users(call):
    return accounts.list_users(call.project_id)


@api.route("/user", "PUT")
def create_user(call):
    return accounts.create_user(call.project_id, call.text("username", required=True),
                                call.text("password", required=True), call.text("email", required=True),
                                created_by=call.user_id).account


@api.route("/user", "POST")
def update_user(call):
    return auth.update_account(call.caller, username=call.text("username"), password=call.text("password"),
                               email=call.text("email"), current_password=call.text("current_password"))


@api.route("/user", "DELETE")
def delete_user(call):
    accounts.delete_account(call.project_id, call.user_id)
    call.set_session_cookie(None)
    return {}


# ---- /point -----------------------------------------------------------------------------------

@api.route("/point", "GET", scopes=("read",))
def get_point(call):
    return meters.point(call.project_id, meter_id=call.get("id"), name=call.get("name"))


@api.route("/point", "PUT", scopes=("ingest",))
def register_point(call):
    return meters.register(call.project_id, call.params)


@api.route("/point", "POST")
def rename_point(call):
    return meters.change(call.project_id, meter_id=call.get("id"), name=call.get("name"), new_name=call.get("new"),
                         parent=call.get("Parent"), tariff=call.get("Tariff"))


# ---- /data, /interval -------------------------------------------------------------------------

@api.route("/data", "GET", scopes=("read",))
def latest_readings(call):
    return meters.latest(call.project_id, meters.LATEST)


@api.route("/data", "POST", scopes=("ingest",))
def push_readings(call):
    return ingest.ingest(call.project_id, call.get("readings"))


@api.route("/interval", "GET", scopes=("read",))
def latest_intervals(call):
    return meters.latest(call.project_id, meters.INTERVAL)


# ---- /file, /graphics -------------------------------------------------------------------------

@api.route("/file", "GET", scopes=("read",))
def export_file(call):
    return call.file_answer(exports.export(call.project_id, call.get("start"), call.get("end"),
                                           call.get("type"), call.get("meter"), call.get("period"),
                                           call.get("bill"), call.get("tariff")))


@api.route("/graphics", "GET", scopes=("read",))
def chart(call):
    return call.redirect(charts.chart(call.project_id, kind=call.get("type"), meter_name=call.values("meter") or None,
                                      width=call.get("width"), height=call.get("height"),
                                      start=call.get("start"), end=call.get("end"), bill=call.get("bill")))


# ---- export jobs: GET /file/job and the worker fed by the queue ---------------------------------

@api.route("/file/job", "GET", scopes=("read",))
def export_job(call):
    return call.job_answer(export_jobs.status(call.project_id, call.get("id"), accounts.project_zone(call.project_id)))


@app.on_sqs_message(queue="intellimeter-export-jobs", batch_size=1, name="export_worker")
def export_worker(event):
    export_jobs.handle_event(event, exports.slice_rows)


# ---- /consumption ----------------------------------------------------------------------------

@api.route("/consumption", "GET", scopes=("read",))
def energy_used(call):
    return consumption.consumption(call.project_id, call.get("start"), call.get("end"), call.get("period"),
                                   call.get("meter"))


# ---- /tariffs (managed by an account only; read keys may list them), /bill ----------------------

@api.route("/tariffs", "GET", scopes=("read",))
def list_tariffs(call):
    return tariffs.listing(call.project_id, call.get("id"))


@api.route("/tariffs", "PUT")
def save_tariff(call):
    return tariffs.save(call.project_id, call.params)


@api.route("/tariffs", "DELETE")
def delete_tariff(call):
    return tariffs.delete(call.project_id, call.get("id"))


@api.route("/bill", "GET", scopes=("read",))
def monthly_bills(call):
    return bills.bill(call.project_id, call.get("start"), call.get("end"), call.get("meter"), call.get("tariff"))


# ---- /keys: scoped keys (managed by an account only) ------------------------------------------

@api.route("/keys", "GET")
def list_scoped_keys(call):
    return scoped_keys.listing(call.project_id, accounts.project_zone(call.project_id))


@api.route("/keys", "PUT", secret=True)
def create_scoped_key(call):
    return scoped_keys.create(call.project_id, call.get("label"), call.get("scope"),
                              accounts.project_zone(call.project_id), created_by=call.user_id)


@api.route("/keys", "DELETE")
def delete_scoped_key(call):
    return scoped_keys.delete(call.project_id, call.get("id"))


# ---- /status: the edge agents' reports and the meters' state ---------------------------------

@api.route("/status", "PUT", scopes=("ingest",))
def report_status(call):
    return status.report(call.caller, call.params)


@api.route("/status", "GET", scopes=("read",))
def fleet_status(call):
    return status.overview(call.project_id)


# ---- /openapi.yaml ----------------------------------------------------------------------------

@api.route("/openapi.yaml", "GET", authenticated=False)
def openapi_document(call):
    from chalicelib.apidocs import openapi

    return openapi.response()


# ---- /docs: interactive documentation (Swagger UI over /openapi.yaml) ---------------------------

@api.route("/docs", "GET", authenticated=False)
def documentation_page(call):
    from chalicelib.apidocs import docs_page

    return docs_page.page()


@api.route("/docs/ui.js", "GET", authenticated=False)
def documentation_script(call):
    from chalicelib.apidocs import docs_page

    return docs_page.asset("ui.js")


@api.route("/docs/ui.css", "GET", authenticated=False)
def documentation_stylesheet(call):
    from chalicelib.apidocs import docs_page

    return docs_page.asset("ui.css")
