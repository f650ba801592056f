#!/usr/bin/env python3
"""Writes Sources/RefreshDaemon/Resources/openapi.json (the control API's OpenAPI 3.1 document;
docs/openapi.json links to it), which SwiftPM embeds in refreshd (.embedInCode) and refreshd serves
at /v1/openapi.json. Tests check the routes and every answer's fields against it: edit here, run,
commit the JSON."""
import json, os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

def ref(name): return {"$ref": f"#/components/schemas/{name}"}
def nullable(schema): return {"oneOf": [schema, {"type": "null"}]}
TS = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC"}
UUID = {"type": "string", "format": "uuid", "minLength": 36, "maxLength": 36}
ZONE = {"type": "string", "minLength": 1, "maxLength": 255, "description": "An IANA zone name exactly as in the host's tz database (e.g. America/Chicago)"}

def error_responses(*codes):
    text = {400: "Bad input; the message names the field", 403: "A change on the TCP listener without the API token",
            404: "No such job or block, or no such route", 409: "Conflict (idempotency key reused with other content, or the job can no longer be cancelled)",
            413: "Body too large (a job is at most 64 KiB)",
            503: "The ledger is not usable (ledger_unusableDatabase), cannot be written (ledger_notWritable), is locked by another process "
                 "(ledger_busy: nothing was written; try again after Retry-After), or the queue is full (queue_full)"}
    def response(c):
        r = {"description": text[c], "content": {"application/json": {"schema": ref("Error")}}}
        if c == 503:
            r["headers"] = {"Retry-After": {"description": "Seconds to wait before trying again (busy or not writable)", "schema": {"type": "integer"}}}
        return r
    return {str(c): response(c) for c in codes}

def ok(schema, description="OK", code="200"):
    return {code: {"description": description, "content": {"application/json": {"schema": schema}}}}

schemas = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}},
    "RuleBudget": {"type": "object", "required": ["rule", "used", "limit", "remaining", "resets_at"], "properties": {
        "rule": {"type": "string", "enum": ["segment_daily", "segment_interval", "account_daily", "learned_block"]},
        "used": {"type": "integer"}, "limit": {"type": "integer"}, "remaining": {"type": "integer"}, "resets_at": nullable(TS)}},
    "AccountBudget": {"type": "object", "required": ["account", "used", "limit", "remaining", "resets_at", "paused", "paused_reason", "dry_run", "queued", "next_send_at"],
        "properties": {"account": {"type": "string"}, "used": {"type": "integer"}, "limit": {"type": "integer"}, "remaining": {"type": "integer"},
            "resets_at": nullable(TS), "paused": {"type": "boolean"}, "paused_reason": nullable({"type": "string"}), "dry_run": {"type": "boolean"},
            "queued": {"type": "integer"}, "next_send_at": nullable(TS)}},
    "Budget": {"type": "object", "required": ["now", "accounts"], "properties": {"now": TS, "accounts": {"type": "array", "items": ref("AccountBudget")}}},
    "SegmentBudget": {"type": "object", "required": ["segment_id", "account", "time_zone", "now", "allowed_now", "earliest", "binding", "rules",
        "segment_remaining_today", "account_remaining", "paused_reason"], "properties": {
        "segment_id": UUID, "account": {"type": "string"}, "time_zone": {"type": "string"}, "now": TS, "allowed_now": {"type": "boolean"},
        "earliest": nullable(TS), "binding": {"type": "array", "items": {"type": "string"}}, "rules": {"type": "array", "items": ref("RuleBudget")},
        "segment_remaining_today": {"type": "integer"}, "account_remaining": {"type": "integer"}, "paused_reason": nullable({"type": "string"})}},
    "JobChange": {"type": "object", "additionalProperties": False, "minProperties": 1, "properties": {
        "priority": {"type": "integer", "minimum": -100, "maximum": 100}, "not_before": nullable(TS), "expires_at": nullable(TS)}},
    "RetryFilter": {"type": "object", "additionalProperties": False, "properties": {
        "state": {"type": "string", "enum": ["failed", "expired"], "description": "Default: both"}, "account": {"type": "string"},
        "segment": UUID, "since": {**TS, "description": "Only jobs that failed or expired at or after this instant"}, "dry_run": {"type": "boolean"}}},
    "CancelFilter": {"type": "object", "additionalProperties": False, "anyOf": [{"required": ["segment"]}, {"required": ["account"]}], "properties": {
        "state": {"type": "string", "enum": ["queued"]}, "account": {"type": "string"}, "segment": UUID, "dry_run": {"type": "boolean"}}},
    "BulkResult": {"type": "object", "required": ["count", "dry_run", "jobs"], "properties": {
        "count": {"type": "integer"}, "dry_run": {"type": "boolean"}, "jobs": {"type": "array", "items": ref("Job")}}},
    "SegmentBudgets": {"type": "object", "required": ["now", "segments"], "properties": {"now": TS,
        "segments": {"type": "array", "items": ref("SegmentBudget")}}},
    "Job": {"type": "object", "required": ["id", "state", "account", "segment_id", "time_zone", "priority", "source", "idempotency_key", "not_before",
        "expires_at", "note", "attempt_id", "reason", "tries", "retry_at", "created_at", "updated_at", "held_reason"], "properties": {
        "id": {"type": "integer"}, "state": {"type": "string", "enum": ["queued", "sending", "sent", "coalesced", "failed", "cancelled", "expired"]},
        "account": {"type": "string"}, "segment_id": UUID, "time_zone": {"type": "string"}, "priority": {"type": "integer", "minimum": -100, "maximum": 100},
        "source": {"type": "string"}, "idempotency_key": nullable({"type": "string"}), "not_before": nullable(TS), "expires_at": nullable(TS),
        "note": nullable({"type": "string"}), "attempt_id": nullable({"type": "integer"}), "reason": nullable({"type": "string"}),
        "tries": {"type": "integer"}, "retry_at": nullable(TS), "created_at": TS, "updated_at": TS,
        "held_reason": nullable({"type": "string", "description": "Why a queued job is held instead of planned (its time zone cannot be loaded from the host's tz data; it is never sent with another zone)"})}},
    "JobEnvelope": {"type": "object", "required": ["job"], "properties": {"job": ref("Job"), "created": {"type": "boolean"},
        "forecast": nullable(ref("Forecast"))}},
    "Forecast": {"type": "object", "required": ["fate", "at", "leader"],
        "description": "A queued job's forecast, as GET /v1/plan has it (GET /v1/jobs/{id} only; null once the job is not queued)", "properties": {
        "fate": {"type": "string", "enum": ["send", "coalesce", "expire", "never", "paused", "unknown_account", "held"]}, "at": nullable(TS),
        "leader": nullable({"type": "integer", "description": "The job whose send carries this one (send: its own id)"})}},
    "JobPage": {"type": "object", "required": ["jobs", "next_cursor"], "properties": {"jobs": {"type": "array", "items": ref("Job")},
        "next_cursor": nullable({"type": "string"})}},
    "NewJob": {"type": "object", "required": ["segment_id", "user_time_zone"], "additionalProperties": False,
        "description": "The job file contract (README, 'The job file'): the same validation and idempotency as a spool file.",
        "properties": {"segment_id": UUID, "user_time_zone": ZONE,
            "account": {"type": "string", "default": "default"},
            "id": {"type": "string", "description": "idempotency key", "minLength": 1, "maxLength": 128, "pattern": "^[A-Za-z0-9._:-]+$"},
            "priority": {"type": "integer", "minimum": -100, "maximum": 100, "default": 0}, "not_before": TS, "expires_at": TS,
            "note": {"type": "string", "maxLength": 1024}}},
    "Refresh": {"type": "object", "required": ["id", "account", "segment_id", "time_zone", "outcome", "http_status", "sendgrid_job_id", "started_at",
        "finished_at", "error", "counts_for_segment", "counts_for_account"], "properties": {
        "id": {"type": "integer"}, "account": {"type": "string"}, "segment_id": {"type": "string"}, "time_zone": {"type": "string"},
        "outcome": {"type": "string", "enum": ["reserved", "accepted", "rejected", "rate_limited", "unauthorized", "forbidden", "uncertain", "dry_run",
            "not_sent", "external", "unrecorded"]},
        "http_status": nullable({"type": "integer"}), "sendgrid_job_id": nullable({"type": "string"}), "started_at": TS, "finished_at": nullable(TS),
        "error": nullable({"type": "string"}), "counts_for_segment": {"type": "boolean"}, "counts_for_account": {"type": "boolean"}}},
    "Refreshes": {"type": "object", "required": ["refreshes"], "properties": {"refreshes": {"type": "array", "items": ref("Refresh")}}},
    "PlannedSend": {"type": "object", "required": ["at", "account", "segment_id", "time_zone", "jobs", "reasons"], "properties": {
        "at": TS, "account": {"type": "string"}, "segment_id": {"type": "string"}, "time_zone": {"type": "string"},
        "jobs": {"type": "array", "items": {"type": "integer"}},
        "reasons": {"type": "array", "items": {"type": "string", "enum": ["segment_daily", "segment_interval", "account_daily", "learned_block", "not_before", "queue"]}}}},
    "PlannedJob": {"type": "object", "required": ["id", "account", "segment_id", "time_zone", "fate", "at"], "properties": {
        "id": {"type": "integer"}, "account": {"type": "string"}, "segment_id": {"type": "string"}, "time_zone": {"type": "string"},
        "fate": {"type": "string", "enum": ["send", "coalesce", "expire", "never", "paused", "unknown_account", "held"]}, "at": nullable(TS),
        "leader": {"type": "integer"}, "reason": {"type": "string", "description": "With fate held: why"}}},
    "Plan": {"type": "object", "required": ["now", "sends", "jobs"], "properties": {"now": TS, "sends": {"type": "array", "items": ref("PlannedSend")},
        "jobs": {"type": "array", "items": ref("PlannedJob")}}},
    "AccountStatus": {"type": "object", "required": ["name", "dry_run", "queued", "paused", "paused_reason", "next_send_at", "last_error", "held", "leader", "standby"], "properties": {
        "leader": nullable({"type": "string", "description": "The host_id that sends for the account on a shared ledger (null: one host, or none leads now)"}),
        "standby": nullable({"type": "string", "description": "Why this host does not send for the account (another host leads it, its clock disagrees with the database's); null: it sends"}),
        "name": {"type": "string"}, "dry_run": {"type": "boolean"}, "queued": {"type": "integer"}, "paused": {"type": "boolean"},
        "held": {"type": "integer", "description": "Queued jobs held because their time zone cannot be loaded"},
        "paused_reason": nullable({"type": "string"}), "next_send_at": nullable(TS), "last_error": nullable({"type": "string"})}},
    "Status": {"type": "object", "required": ["version", "tzdata_version", "tz_directory", "dry_run", "started_at", "uptime_seconds", "now", "jobs",
        "queue_size", "spool", "accounts", "paused_accounts", "last_error", "held_jobs", "ledger", "cluster"], "properties": {
        "cluster": nullable({"type": "object", "description": "The hosts sharing a PostgreSQL ledger, as this host sees them (null: SQLite, or the database cannot be read)",
            "required": ["host_id", "hosts", "clock_skew_seconds", "refusal"], "properties": {
            "host_id": {"type": "string", "description": "This host"},
            "hosts": {"type": "array", "items": {"type": "object", "required": ["host_id", "heartbeat_at", "alive"], "properties": {
                "host_id": {"type": "string"}, "heartbeat_at": TS,
                "alive": {"type": "boolean", "description": "Its heartbeat is within the 30 s lease"}}}},
            "clock_skew_seconds": nullable({"type": "number", "description": "This host's clock minus the database's at the last check (every second)"}),
            "refusal": nullable({"type": "string", "description": "Why this host sends nothing: its clock is more than half the safety margin off the database's"})}}),
        "ledger": {"type": "object", "required": ["backend", "location", "reachable", "unreachable_reason"], "properties": {
            "backend": {"type": "string", "enum": ["sqlite", "postgresql"]},
            "location": {"type": "string", "description": "The SQLite file, or the PostgreSQL endpoint (never a password) and this host's id"},
            "reachable": {"type": "boolean", "description": "False while a shared ledger's database cannot be reached (LEDGER UNREACHABLE): nothing is sent, job counts are empty"},
            "unreachable_reason": nullable({"type": "string"})}},
        "held_jobs": {"type": "integer", "description": "Queued jobs held (time zone cannot be loaded), all accounts"},
        "version": {"type": "string"}, "tzdata_version": nullable({"type": "string"}), "tz_directory": {"type": "string"}, "dry_run": {"type": "boolean"},
        "started_at": TS, "uptime_seconds": {"type": "integer"}, "now": TS,
        "jobs": {"type": "object", "additionalProperties": {"type": "integer"}}, "queue_size": {"type": "integer"},
        "spool": {"type": "object", "required": ["backlog", "taken", "rejected", "blocked", "skipped", "rejected_files", "rejected_bytes"], "properties": {"backlog": {"type": "integer"},
            "taken": {"type": "integer"}, "rejected": {"type": "integer"}, "blocked": nullable({"type": "string"}),
            "skipped": {"type": "array", "items": {"type": "string"}, "description": "Entries of incoming/ that cannot be moved out, skipped (remove them by hand)"},
            "rejected_files": {"type": "integer"}, "rejected_bytes": {"type": "integer"}}},
        "accounts": {"type": "array", "items": ref("AccountStatus")}, "paused_accounts": {"type": "array", "items": {"type": "string"}},
        "last_error": nullable({"type": "string"})}},
}

def q(name, schema, description, required=False):
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}
def p(name, schema, description):
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}

JOB_ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": 9223372036854775807}
BLOCK = {"type": "object", "required": ["id", "account", "segment_id", "scope", "until", "reason"], "properties": {
    "id": {"type": "integer", "minimum": 1}, "account": {"type": "string"}, "segment_id": nullable(UUID),
    "scope": {"type": "string", "enum": ["segment", "account"]}, "until": TS, "reason": {"type": "string"}}}
schemas["Block"] = BLOCK
schemas["Blocks"] = {"type": "object", "required": ["now", "blocks"], "properties": {"now": TS, "blocks": {"type": "array", "items": ref("Block")}}}
schemas["Hold"] = {"type": "object", "required": ["id", "account", "segment_id", "reason", "who", "since"], "properties": {
    "id": {"type": "integer", "minimum": 1}, "account": {"type": "string"}, "segment_id": nullable(UUID), "reason": {"type": "string"},
    "who": {"type": "string"}, "since": TS}}
schemas["Holds"] = {"type": "object", "required": ["holds"], "properties": {"holds": {"type": "array", "items": ref("Hold")}}}
schemas["HoldEnvelope"] = {"type": "object", "required": ["hold"], "properties": {"hold": ref("Hold")}}
schemas["NewHold"] = {"type": "object", "required": ["account", "reason"], "additionalProperties": False, "properties": {
    "account": {"type": "string"}, "segment": UUID, "reason": {"type": "string", "minLength": 1, "maxLength": 1024},
    "who": {"type": "string", "maxLength": 256, "description": "Who asks (refreshctl sends the user's name); default api"}}}
schemas["Status"]["required"].append("holds")
schemas["Status"]["required"].append("listen")
schemas["Status"]["properties"]["listen"] = nullable({"type": "string", "description": "The loopback TCP listener (host:port), if any; the status page is at http://<listen>/ui"})
schemas["Status"]["properties"]["holds"] = {"type": "array", "items": ref("Hold")}
schemas["BlockEnvelope"] = {"type": "object", "required": ["block"], "properties": {"block": ref("Block")}}
BLOCK_ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": 9223372036854775807}
JOB_LINKS = {"GetJob": {"operationId": "getJob", "parameters": {"id": "$response.body#/job/id"}},
             "CancelJob": {"operationId": "cancelJob", "parameters": {"id": "$response.body#/job/id"}}}
paths = {
    "/healthz": {"get": {"operationId": "health", "summary": "Liveness: the ledger answers",
        "responses": {**ok({"type": "object", "required": ["status"], "properties": {"status": {"type": "string", "const": "ok"}}}), **error_responses(503)}}},
    "/metrics": {"get": {"operationId": "metrics", "summary": "Prometheus text format", "responses": {"200": {"description": "Metrics",
        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    "/ui": {"get": {"operationId": "statusPage", "summary": "The status page: budget gauges, the timeline (SVG), the queue, the last refreshes, blocks and holds; self-contained HTML, no script",
        "responses": {"200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}}, **error_responses(503)}}},
    "/v1/openapi.json": {"get": {"operationId": "openapi", "summary": "This document", "responses": ok({"type": "object"})}},
    "/v1/status": {"get": {"operationId": "status", "summary": "Version, tz data, dry-run, uptime, queue, spool, paused accounts, last error",
        "responses": {**ok(ref("Status")), **error_responses(503)}}},
    "/v1/budget": {"get": {"operationId": "budget", "summary": "Every account: used, limit, remaining, resets_at (UTC), paused and why",
        "responses": {**ok(ref("Budget")), **error_responses(503)}}},
    "/v1/segments": {"get": {"operationId": "listSegments",
        "summary": "Every known segment's budget (a queued job or a refresh in the last 4 days), in the zone of its latest job or refresh",
        "parameters": [q("account", {"type": "string"}, "Only this account")],
        "responses": {**ok(ref("SegmentBudgets")), **error_responses(400, 503)}}},
    "/v1/segments/{id}/budget": {"get": {"operationId": "segmentBudget",
        "summary": "One segment: what is left today in its zone and for the account, the earliest instant a refresh may go out, the binding rules",
        "parameters": [p("id", UUID, "The segment id"),
            q("time_zone", ZONE, "IANA zone; required for a segment refreshd has never seen, else the zone of its latest job or refresh"),
            q("account", {"type": "string", "default": "default"}, "The account")],
        "responses": {**ok(ref("SegmentBudget")), **error_responses(400, 503)}}},
    "/v1/jobs": {
        "get": {"operationId": "listJobs", "summary": "Jobs, oldest first, a page at a time",
            "parameters": [q("state", {"type": "string", "enum": ["queued", "sending", "sent", "coalesced", "failed", "cancelled", "expired"]}, "Only this state"),
                q("segment", UUID, "Only this segment"), q("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "Page size"),
                q("cursor", {"type": "string", "pattern": "^[0-9]+$"}, "next_cursor of the previous page")],
            "responses": {**ok(ref("JobPage")), **error_responses(400, 503)}},
        "post": {"operationId": "enqueueJob", "summary": "Queue a refresh (the job file contract; idempotent with an id)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("NewJob")}}},
            "responses": {**ok(ref("JobEnvelope"), "Created", "201"), **ok(ref("JobEnvelope"), "The same id and content were queued before: nothing new"),
                **error_responses(400, 403, 409, 413, 503)}}},
    "/v1/jobs/{id}": {
        "get": {"operationId": "getJob", "summary": "One job with its forecast; with wait, a long poll that answers when the job or its forecast changes",
            "parameters": [p("id", JOB_ID, "The job id"),
                q("wait", {"type": "integer", "minimum": 0, "maximum": 300, "default": 0},
                  "Seconds to wait for a change from If-None-Match (or from the state at arrival) before answering; a finished job answers at once"),
                {"name": "If-None-Match", "in": "header", "required": False, "schema": {"type": "string"},
                 "description": "The ETag of an earlier answer: with wait, answer as soon as the job differs from it"}],
            "responses": {**{"200": {"description": "OK", "content": {"application/json": {"schema": ref("JobEnvelope")}},
                "headers": {"ETag": {"description": "Changes with the job's state and forecast", "schema": {"type": "string"}}}}},
                **error_responses(400, 404, 503)}},
        "delete": {"operationId": "cancelJob", "summary": "Cancel a job that has not been sent", "parameters": [p("id", JOB_ID, "The job id")],
            "responses": {**ok(ref("JobEnvelope")), **error_responses(400, 403, 404, 409, 503)}},
        "patch": {"operationId": "editJob", "summary": "Change a queued job's priority, not_before or expires_at (null clears a time)",
            "parameters": [p("id", JOB_ID, "The job id")],
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("JobChange")}}},
            "responses": {**ok(ref("JobEnvelope")), **error_responses(400, 403, 404, 409, 413, 503)}}},
    "/v1/jobs/{id}/retry": {"post": {"operationId": "retryJob",
        "summary": "Queue a failed or expired job again (tries and reason afresh, a passed expires_at dropped; its attempts stay in the history)",
        "parameters": [p("id", JOB_ID, "The job id")],
        "responses": {**ok(ref("JobEnvelope")), **error_responses(400, 403, 404, 409, 503)}}},
    "/v1/jobs/retry": {"post": {"operationId": "retryJobs", "summary": "Retry every failed (or expired) job a filter takes; dry_run lists them only",
        "requestBody": {"required": False, "content": {"application/json": {"schema": ref("RetryFilter")}}},
        "responses": {**ok(ref("BulkResult")), **error_responses(400, 403, 413, 503)}}},
    "/v1/jobs/cancel": {"post": {"operationId": "cancelJobs",
        "summary": "Cancel every queued job of a segment and/or an account (one of them is required); dry_run lists them only",
        "requestBody": {"required": True, "content": {"application/json": {"schema": ref("CancelFilter")}}},
        "responses": {**ok(ref("BulkResult")), **error_responses(400, 403, 413, 503)}}},
    "/v1/holds": {
        "get": {"operationId": "listHolds", "summary": "Operator holds in force (nothing is sent for a held account or segment)",
            "parameters": [q("account", {"type": "string"}, "Only this account")],
            "responses": {**ok(ref("Holds")), **error_responses(503)}},
        "post": {"operationId": "addHold", "summary": "Hold an account, or one of its segments, until released (kept in the ledger: survives restarts); idempotent per scope",
            "requestBody": {"required": True, "content": {"application/json": {"schema": ref("NewHold")}}},
            "responses": {**ok(ref("HoldEnvelope"), "Held", "201"), **ok(ref("HoldEnvelope"), "Already held: the hold in force"),
                **error_responses(400, 403, 413, 503)}}},
    "/v1/holds/{id}": {"delete": {"operationId": "releaseHold", "summary": "Release a hold: its jobs are planned and sent again",
        "parameters": [p("id", BLOCK_ID, "The hold id")],
        "responses": {**ok(ref("HoldEnvelope")), **error_responses(400, 403, 404, 503)}}},
    "/v1/plan": {"get": {"operationId": "plan", "summary": "The forecast: when each queued job is expected to go out, and why then",
        "responses": {**ok(ref("Plan")), **error_responses(503)}},
        "post": {"operationId": "planWhatIf",
            "summary": "What if: the forecast as if these jobs were queued now, without queueing them (candidates have ids -1, -2, ... in order). Needs no token: it changes nothing",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object", "required": ["jobs"], "additionalProperties": False,
                "properties": {"jobs": {"type": "array", "minItems": 1, "maxItems": 100, "items": ref("NewJob")}}}}}},
            "responses": {**ok(ref("Plan")), **error_responses(400, 413, 503)}}},
    "/v1/refreshes": {"get": {"operationId": "listRefreshes", "summary": "The ledger's attempts with outcomes, newest first",
        "parameters": [q("since", TS, "Only attempts started at or after this instant (default: 7 days ago)"), q("segment", UUID, "Only this segment"),
            q("account", {"type": "string"}, "Only this account"), q("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}, "At most this many")],
        "responses": {**ok(ref("Refreshes")), **error_responses(400, 503)}}},
    "/v1/blocks": {"get": {"operationId": "listBlocks", "summary": "Blocks learned from SendGrid's 429s that are still in force",
        "parameters": [q("account", {"type": "string"}, "Only this account")],
        "responses": {**ok(ref("Blocks")), **error_responses(400, 503)}}},
    "/v1/blocks/{id}": {"delete": {"operationId": "liftBlock",
        "summary": "Lift a learned block by hand (it ends now; the row stays with a note). The operator's call: it may earn another 429",
        "parameters": [p("id", BLOCK_ID, "The block id")],
        "responses": {**ok(ref("BlockEnvelope")), **error_responses(400, 403, 404, 503)}}},
}

# Links let a client (and schemathesis' stateful phase) follow a created job.
for code in ("201", "200"):
    paths["/v1/jobs"]["post"]["responses"][code]["links"] = JOB_LINKS
document = {"openapi": "3.1.0", "info": {"title": "refreshd control API", "version": "1",
    "description": "refreshd's local HTTP API: on a unix socket (default /run/refreshd/refreshd.sock, mode 0660, group refreshd) and optionally on a loopback TCP port, where POST, PATCH and DELETE need the API token. JSON everywhere; errors are {\"error\": {\"code\", \"message\"}}."},
    "servers": [{"url": "http://localhost"}], "paths": paths, "components": {"schemas": schemas}}
text = json.dumps(document, indent=2, sort_keys=True) + "\n"
with open(os.path.join(ROOT, "Sources/RefreshDaemon/Resources/openapi.json"), "w") as f: f.write(text)
print("wrote Sources/RefreshDaemon/Resources/openapi.json (docs/openapi.json links to it)")
