"""The Intellimeter API's routes: each parses its arguments, calls one function of chalicelib, returns the result.

Rendering (responseType), authentication, errors and the access log are chalicelib/web.py's.
The contract is docs/API.md (a copy of the shared spec) and docs/openapi.yaml.
"""
from chalice import Chalice

from chalicelib import accounts, auth, charts, export_jobs, exports, meters, readings
from chalicelib.web import Api

app = Chalice(app_name="intellimeter-api")
api = Api(app)


# ---- /session ---------------------------------------------------------------------------------

@api.route("/session", "GET")
def get_session(call):
    return accounts.account(call.project_id, call.user_id)


@api.route("/session", "PUT", authenticated=False)
def log_in(call):
    result, token = auth.login(username=call.get("username"), password=call.get("password"), key=call.get("key"))
    call.set_session_cookie(token)
    return result


@api.route("/session", "DELETE")
def log_out(call):
    auth.logout(call.caller)
    call.set_session_cookie(None)
    return {}


# ---- /key -------------------------------------------------------------------------------------

@api.route("/key", "GET")
def get_key(call):
    return accounts.current_key(call.project_id, call.user_id)


@api.route("/key", "POST")
def new_key(call):
    return accounts.regenerate_key(call.project_id, call.user_id)


# ---- /user ------------------------------------------------------------------------------------

@api.route("/user", "GET")
def list_users(call):
    return accounts.list_users(call.project_id)


@api.route("/user", "PUT")
def create_user(call):
    account, _key = accounts.create_user(call.project_id, call.text("username", required=True),
                                         call.text("password", required=True), call.text("email", required=True))
    return account


@api.route("/user", "POST")
def update_user(call):
    return accounts.update_account(call.project_id, call.user_id, call.caller.session_digest,
                                   username=call.text("username"), password=call.text("password"),
                                   email=call.text("email"))


@api.route("/user", "DELETE")
def delete_user(call):
    accounts.delete_account(call.project_id, call.user_id)
    call.set_session_cookie(None)
    return {}


# ---- /point -----------------------------------------------------------------------------------

@api.route("/point", "GET")
def get_point(call):
    return meters.point(call.project_id, meter_id=call.get("id"), name=call.get("name"))


@api.route("/point", "PUT")
def register_point(call):
    return meters.register(call.project_id, call.params)


@api.route("/point", "POST")
def rename_point(call):
    return meters.rename(call.project_id, call.get("new"), meter_id=call.get("id"), name=call.get("name"))


# ---- /data, /interval -------------------------------------------------------------------------

@api.route("/data", "GET")
def latest_readings(call):
    return readings.latest(call.project_id, "latest")


@api.route("/data", "POST")
def push_readings(call):
    return readings.ingest(call.project_id, call.get("readings"))


@api.route("/interval", "GET")
def latest_intervals(call):
    return readings.latest(call.project_id, "interval")


# ---- /file, /graphics -------------------------------------------------------------------------

@api.route("/file", "GET")
def export_file(call):
    return call.file_answer(exports.export(call.project_id, call.get("start"), call.get("end"),
                                           call.get("type"), call.get("meter")))


@api.route("/graphics", "GET")
def chart(call):
    return call.redirect(charts.chart(call.project_id, kind=call.get("type"), meter_name=call.get("meter"),
                                      width=call.get("width"), height=call.get("height"),
                                      start=call.get("start"), end=call.get("end")))


# ---- export jobs: GET /file/job and the worker fed by the queue ---------------------------------

@api.route("/file/job", "GET")
def export_job(call):
    return call.job_answer(*export_jobs.status(call.project_id, call.get("id"), accounts.project_zone(call.project_id)))


@app.on_sqs_message(queue="intellimeter-export-jobs", batch_size=1, name="export_worker")
def export_worker(event):
    export_jobs.handle_event(event, exports.slice_rows)


# ---- /openapi.yaml ----------------------------------------------------------------------------

@api.route("/openapi.yaml", "GET", authenticated=False)
def openapi_document(call):
    from chalicelib import openapi

    return openapi.response()


# ---- /docs: interactive documentation (Swagger UI over /openapi.yaml) ---------------------------

@api.route("/docs", "GET", authenticated=False)
def documentation_page(call):
    from chalicelib import docs_page

    return docs_page.page()


@api.route("/docs/ui.js", "GET", authenticated=False)
def documentation_script(call):
    from chalicelib import docs_page

    return docs_page.asset("ui.js")


@api.route("/docs/ui.css", "GET", authenticated=False)
def documentation_stylesheet(call):
    from chalicelib import docs_page

    return docs_page.asset("ui.css")
