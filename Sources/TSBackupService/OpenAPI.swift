/// The OpenAPI 3 document served at /openapi.json. Hand-written so it says exactly what the
/// routes do; ServiceTests checks that every route of the router is described here and that
/// every described path answers.
enum OpenAPI {
    static let document = #"""
{
  "openapi": "3.0.3",
  "info": {
    "title": "tsbackup serve",
    "version": "0.1.0",
    "description": "The backup service for PostgreSQL + TimescaleDB databases. Every /api route needs `Authorization: Bearer TOKEN`; roles: owner (its databases: backups, exports, downloads, restore requests into a new database), operator (everything), viewer (read only). 401 for a missing or unknown token, 403 for a role or database the token may not use."
  },
  "servers": [{"url": "/"}],
  "security": [{"bearer": []}],
  "paths": {
    "/health": {
      "get": {"operationId": "health", "summary": "Liveness", "security": [],
        "responses": {"200": {"description": "The service answers.", "content": {"text/plain": {"schema": {"type": "string"}}}}}}
    },
    "/openapi.json": {
      "get": {"operationId": "openapi", "summary": "This document", "security": [],
        "responses": {"200": {"description": "The OpenAPI document.", "content": {"application/json": {"schema": {"type": "object"}}}}}}
    },
    "/metrics": {
      "get": {"operationId": "metrics", "summary": "Prometheus metrics (text exposition format): per database the last successful backup's time, duration and size, failures, the last rehearsal's result and time; queue depth. Needs an operator's or viewer's token unless the config says metrics.auth: none (loopback only).",
        "responses": {"200": {"description": "The metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}}}
    },
    "/": {
      "get": {"operationId": "root", "summary": "Redirects to the dashboard", "security": [],
        "responses": {"303": {"description": "See /dashboard."}}}
    },
    "/dashboard": {
      "get": {"operationId": "dashboard", "summary": "The dashboard (HTML); signed in by the cookie the sign-in sets, else a redirect to the sign-in", "security": [],
        "responses": {"200": {"description": "The page.", "content": {"text/html": {"schema": {"type": "string"}}}},
          "303": {"description": "Not signed in: see /dashboard/signin."}}}
    },
    "/dashboard/signin": {
      "get": {"operationId": "dashboardSignInPage", "summary": "The dashboard's sign-in form (HTML)", "security": [],
        "responses": {"200": {"description": "The form.", "content": {"text/html": {"schema": {"type": "string"}}}}}},
      "post": {"operationId": "dashboardSignIn", "summary": "Signs in with an API token: sets it as an HttpOnly cookie and redirects to the dashboard", "security": [],
        "requestBody": {"required": true, "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}}}}},
        "responses": {"303": {"description": "Signed in: see /dashboard."},
          "401": {"description": "Not a valid token: the form again, with the message.", "content": {"text/html": {"schema": {"type": "string"}}}}}}
    },
    "/dashboard/signout": {
      "post": {"operationId": "dashboardSignOut", "summary": "Clears the dashboard's cookie", "security": [],
        "responses": {"303": {"description": "See /dashboard/signin."}}}
    },
    "/api/status": {
      "get": {"operationId": "status", "summary": "The service's state: version, job queue",
        "responses": {"200": {"description": "Status", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Status"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}}}
    },
    "/api/databases": {
      "get": {"operationId": "listDatabases", "summary": "The configured databases the token may see, with schedules, active job and last backup",
        "responses": {"200": {"description": "Databases", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Database"}}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}}}
    },
    "/api/databases/{name}": {
      "parameters": [{"$ref": "#/components/parameters/DatabaseName"}],
      "get": {"operationId": "getDatabase", "summary": "One database's status",
        "responses": {"200": {"description": "The database", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Database"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}}}
    },
    "/api/databases/{name}/backups": {
      "parameters": [{"$ref": "#/components/parameters/DatabaseName"}],
      "post": {"operationId": "requestBackup", "summary": "Queue an on-demand backup (owners of the database, operators)",
        "requestBody": {"required": false, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BackupRequest"}}}},
        "responses": {"202": {"description": "The queued job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
          "400": {"$ref": "#/components/responses/BadRequest"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"},
          "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Busy"}, "503": {"$ref": "#/components/responses/Stopping"}}}
    },
    "/api/databases/{name}/exports": {
      "parameters": [{"$ref": "#/components/parameters/DatabaseName"}],
      "post": {"operationId": "requestExport", "summary": "Queue a hypertable export (owners of the database, operators)",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ExportRequest"}}}},
        "responses": {"202": {"description": "The queued job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
          "400": {"$ref": "#/components/responses/BadRequest"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"},
          "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Busy"}, "503": {"$ref": "#/components/responses/Stopping"}}}
    },
    "/api/databases/{name}/retention": {
      "parameters": [{"$ref": "#/components/parameters/DatabaseName"}],
      "get": {"operationId": "retentionDryRun", "summary": "Dry run of the database's retention policy: every backup with keep or delete and why (nothing is deleted)",
        "responses": {"200": {"description": "The plan", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RetentionPlan"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"},
          "404": {"$ref": "#/components/responses/NotFound"}}},
      "post": {"operationId": "applyRetention", "summary": "Queue a retention job that applies the policy now (operators)",
        "responses": {"202": {"description": "The queued job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"},
          "409": {"$ref": "#/components/responses/Busy"}, "503": {"$ref": "#/components/responses/Stopping"}}}
    },
    "/api/databases/{name}/rehearsals": {
      "parameters": [{"$ref": "#/components/parameters/DatabaseName"}],
      "post": {"operationId": "requestRehearsal", "summary": "Queue a restore rehearsal of the newest complete backup into a scratch database on the rehearsal target (operators)",
        "responses": {"202": {"description": "The queued job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"},
          "409": {"$ref": "#/components/responses/Busy"}, "503": {"$ref": "#/components/responses/Stopping"}}}
    },
    "/api/rehearsals": {
      "get": {"operationId": "listRehearsals", "summary": "Rehearsal jobs, newest first (at most 100), with their reports",
        "parameters": [{"name": "database", "in": "query", "required": false, "schema": {"type": "string"}, "description": "Only this database's rehearsals."}],
        "responses": {"200": {"description": "Rehearsal jobs", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}}}
    },
    "/api/backups": {
      "get": {"operationId": "listBackups", "summary": "Backups and exports in the repository, oldest first (owners: of their databases)",
        "parameters": [{"name": "database", "in": "query", "required": false, "schema": {"type": "string"}, "description": "Only entries of this configured database."}],
        "responses": {"200": {"description": "Entries", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Backup"}}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}}}
    },
    "/api/backups/{id}": {
      "parameters": [{"$ref": "#/components/parameters/BackupID"}],
      "get": {"operationId": "getBackup", "summary": "One entry with its manifest",
        "responses": {"200": {"description": "The entry", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BackupDetail"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}}},
      "delete": {"operationId": "deleteBackup", "summary": "Queue the deletion of an entry (operators); refused while a download streams it",
        "responses": {"202": {"description": "The queued job (it fails, deleting nothing, if a download of the entry started meanwhile)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"},
          "409": {"description": "A download is streaming the entry (delete it again after the download has ended), or the database already has a queued or running job (`job`).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
          "503": {"$ref": "#/components/responses/Stopping"}}}
    },
    "/api/backups/{id}/download": {
      "parameters": [{"$ref": "#/components/parameters/BackupID"}],
      "get": {"operationId": "downloadBackup", "summary": "The entry as a tar stream: ID/manifest.json, then every file (owners of its database, operators)",
        "responses": {"200": {"description": "A tar archive", "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"},
          "409": {"$ref": "#/components/responses/Conflict"}}}
    },
    "/api/jobs": {
      "get": {"operationId": "listJobs", "summary": "Jobs, newest first",
        "parameters": [
          {"name": "database", "in": "query", "required": false, "schema": {"type": "string"}},
          {"name": "state", "in": "query", "required": false, "schema": {"type": "string", "enum": ["queued", "running", "finished", "failed", "interrupted"]}},
          {"$ref": "#/components/parameters/Limit"}, {"$ref": "#/components/parameters/Offset"}],
        "responses": {"200": {"description": "Jobs", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}}}}},
          "400": {"$ref": "#/components/responses/BadRequest"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}}}
    },
    "/api/jobs/{id}": {
      "parameters": [{"$ref": "#/components/parameters/NumericID"}],
      "get": {"operationId": "getJob", "summary": "One job with progress and report",
        "responses": {"200": {"description": "The job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}}}
    },
    "/api/restore-requests": {
      "get": {"operationId": "listRestoreRequests", "summary": "Restore requests, newest first",
        "parameters": [
          {"name": "state", "in": "query", "required": false, "schema": {"type": "string", "enum": ["pending", "approved", "rejected"]}},
          {"$ref": "#/components/parameters/Limit"}, {"$ref": "#/components/parameters/Offset"}],
        "responses": {"200": {"description": "Requests", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/RestoreRequest"}}}}},
          "400": {"$ref": "#/components/responses/BadRequest"}, "401": {"$ref": "#/components/responses/Unauthorized"}}},
      "post": {"operationId": "createRestoreRequest", "summary": "Ask for a restore into a new database (owners of the database, operators; promote_to: operators only)",
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RestoreRequestBody"}}}},
        "responses": {"201": {"description": "The pending request", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RestoreRequest"}}}},
          "400": {"$ref": "#/components/responses/BadRequest"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"},
          "404": {"$ref": "#/components/responses/NotFound"}, "409": {"$ref": "#/components/responses/Conflict"}}}
    },
    "/api/restore-requests/{id}": {
      "parameters": [{"$ref": "#/components/parameters/NumericID"}],
      "get": {"operationId": "getRestoreRequest", "summary": "One restore request with its job",
        "responses": {"200": {"description": "The request", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RestoreRequest"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}}}
    },
    "/api/restore-requests/{id}/approve": {
      "parameters": [{"$ref": "#/components/parameters/NumericID"}],
      "post": {"operationId": "approveRestoreRequest", "summary": "Approve: queue the restore job (restore into a new database, verify, promote if asked) (operators)",
        "responses": {"202": {"description": "The approved request with its job", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RestoreRequest"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"},
          "409": {"$ref": "#/components/responses/Busy"}, "503": {"$ref": "#/components/responses/Stopping"}}}
    },
    "/api/restore-requests/{id}/reject": {
      "parameters": [{"$ref": "#/components/parameters/NumericID"}],
      "post": {"operationId": "rejectRestoreRequest", "summary": "Reject a pending request (operators)",
        "responses": {"200": {"description": "The rejected request", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RestoreRequest"}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"},
          "409": {"$ref": "#/components/responses/Conflict"}}}
    },
    "/api/schedules": {
      "get": {"operationId": "listSchedules", "summary": "Configured schedules with paused state and last run",
        "responses": {"200": {"description": "Schedules", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}}}
    },
    "/api/schedules/{database}/pause": {
      "parameters": [{"name": "database", "in": "path", "required": true, "schema": {"type": "string"}}, {"$ref": "#/components/parameters/ScheduleKind"}],
      "post": {"operationId": "pauseSchedules", "summary": "Pause a database's schedules (all, or the one of `kind`) (operators)",
        "responses": {"200": {"description": "The database's schedules", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}}}
    },
    "/api/schedules/{database}/resume": {
      "parameters": [{"name": "database", "in": "path", "required": true, "schema": {"type": "string"}}, {"$ref": "#/components/parameters/ScheduleKind"}],
      "post": {"operationId": "resumeSchedules", "summary": "Resume a database's schedules (operators)",
        "responses": {"200": {"description": "The database's schedules", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}}}}},
          "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}, "404": {"$ref": "#/components/responses/NotFound"}}}
    },
    "/api/audit": {
      "get": {"operationId": "auditLog", "summary": "The audit log, newest first (operators, viewers)",
        "parameters": [{"name": "actor", "in": "query", "required": false, "schema": {"type": "string"}},
          {"$ref": "#/components/parameters/Limit"}, {"$ref": "#/components/parameters/Offset"}],
        "responses": {"200": {"description": "Entries", "content": {"application/json": {"schema": {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}}}}},
          "400": {"$ref": "#/components/responses/BadRequest"}, "401": {"$ref": "#/components/responses/Unauthorized"}, "403": {"$ref": "#/components/responses/Forbidden"}}}
    }
  },
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API token; the config stores its SHA-256 (`tsbackup serve hash-token`)."}},
    "parameters": {
      "DatabaseName": {"name": "name", "in": "path", "required": true, "schema": {"type": "string"}, "description": "A database's name in the config."},
      "BackupID": {"name": "id", "in": "path", "required": true, "schema": {"type": "string"}, "description": "A repository entry's id, e.g. 20261127T031500Z."},
      "NumericID": {"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "format": "int64", "minimum": 1}},
      "Limit": {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
      "Offset": {"name": "offset", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 0, "maximum": 1000000, "default": 0}},
      "ScheduleKind": {"name": "kind", "in": "query", "required": false, "schema": {"type": "string", "enum": ["backup", "rehearsal"]}}
    },
    "responses": {
      "BadRequest": {"description": "The request is malformed (body not valid JSON, a bad value).", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "Unauthorized": {"description": "No token, or not a valid one.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "Forbidden": {"description": "The token's role or databases do not allow this.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "NotFound": {"description": "No such database, entry, job or request.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "Conflict": {"description": "The thing is not in a state that allows this.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "Busy": {"description": "The database already has a queued or running job (`job`), or the request is no longer pending.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
      "Stopping": {"description": "The service is shutting down.", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    },
    "schemas": {
      "Error": {"type": "object", "required": ["error"], "properties": {
        "error": {"type": "object", "required": ["status", "code", "message"], "properties": {
          "status": {"type": "integer"}, "code": {"type": "string"}, "message": {"type": "string"}}},
        "job": {"$ref": "#/components/schemas/Job"}}},
      "Status": {"type": "object", "required": ["version", "accepting_jobs", "running_jobs", "queued_jobs", "repository", "databases"], "properties": {
        "version": {"type": "string"}, "accepting_jobs": {"type": "boolean"}, "running_jobs": {"type": "integer"}, "queued_jobs": {"type": "integer"},
        "repository": {"type": "string"}, "databases": {"type": "integer"}}},
      "Job": {"type": "object", "required": ["id", "kind", "database", "state", "requested_by", "created_at"], "properties": {
        "id": {"type": "integer", "format": "int64"},
        "kind": {"type": "string", "description": "backup, export-hypertable, restore, delete, gc, and kinds added by the scheduler (rehearsal, retention)."},
        "database": {"type": "string"},
        "state": {"type": "string", "enum": ["queued", "running", "finished", "failed", "interrupted"]},
        "parameters": {"description": "What the job was asked to do."},
        "progress": {"description": "The latest progress while running (phase, counts, bytes)."},
        "report": {"description": "The use case's report: a backup's manifest summary, a restore's step-by-step report with every verification check."},
        "error": {"type": "string"}, "entry_id": {"type": "string"}, "requested_by": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"}, "started_at": {"type": "string", "format": "date-time"}, "finished_at": {"type": "string", "format": "date-time"}}},
      "Backup": {"type": "object", "required": ["id", "state"], "properties": {
        "id": {"type": "string"}, "kind": {"type": "string", "enum": ["database", "hypertable"]},
        "state": {"type": "string", "enum": ["complete", "failed", "incomplete"]},
        "database": {"type": "string", "description": "The configured database it was taken from."},
        "source_database": {"type": "string"}, "started_at": {"type": "string", "format": "date-time"}, "duration_seconds": {"type": "number"},
        "bytes": {"type": "integer", "format": "int64"}, "files": {"type": "integer"}, "label": {"type": "string"}, "table": {"type": "string"},
        "error": {"type": "string"}, "problem": {"type": "string"}}},
      "BackupDetail": {"type": "object", "required": ["backup"], "properties": {
        "backup": {"$ref": "#/components/schemas/Backup"}, "manifest": {"type": "object", "description": "The manifest as stored."}}},
      "Schedule": {"type": "object", "required": ["database", "kind", "cron", "time_zone", "paused"], "properties": {
        "database": {"type": "string"}, "kind": {"type": "string", "enum": ["backup", "rehearsal"]}, "cron": {"type": "string"}, "time_zone": {"type": "string"},
        "paused": {"type": "boolean"}, "last_run_at": {"type": "string", "format": "date-time"}, "last_job_id": {"type": "integer", "format": "int64"}}},
      "Database": {"type": "object", "required": ["name", "host", "port", "dbname", "schedules", "backups"], "properties": {
        "name": {"type": "string"}, "host": {"type": "string"}, "port": {"type": "integer"}, "dbname": {"type": "string"},
        "schedules": {"type": "array", "items": {"$ref": "#/components/schemas/Schedule"}},
        "retention": {"type": "object", "properties": {"keep_last": {"type": "integer"}, "keep_daily": {"type": "integer"}, "keep_weekly": {"type": "integer"}, "keep_monthly": {"type": "integer"}}},
        "rehearsal_target": {"type": "string"}, "active_job": {"$ref": "#/components/schemas/Job"}, "last_backup": {"$ref": "#/components/schemas/Backup"},
        "backups": {"type": "integer"}}},
      "BackupRequest": {"type": "object", "properties": {"label": {"type": "string", "maxLength": 200, "pattern": "^[^\\r\\n]*$"}}},
      "ExportRequest": {"type": "object", "required": ["table"], "properties": {
        "table": {"type": "string", "pattern": "^[^.]{1,63}[.][^.]{1,63}$", "description": "schema.name of the hypertable."},
        "since": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^\\r\\n]*$", "description": "Only rows at or after this time."},
        "until": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[^\\r\\n]*$", "description": "Only rows before this time."}}},
      "RestoreRequestBody": {"type": "object", "required": ["database", "backup_id"], "properties": {
        "database": {"type": "string"}, "backup_id": {"type": "string"},
        "into": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,62}$", "description": "The new database's name (default: <source>_restore_<id>)."},
        "promote_to": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]{0,62}$", "description": "After verification, give the restored database this name, moving the existing one aside (operators only)."}}},
      "RestoreRequest": {"type": "object", "required": ["id", "database", "backup_id", "state", "requested_by", "requested_at"], "properties": {
        "id": {"type": "integer", "format": "int64"}, "database": {"type": "string"}, "backup_id": {"type": "string"}, "into": {"type": "string"}, "promote_to": {"type": "string"},
        "state": {"type": "string", "enum": ["pending", "approved", "rejected"]}, "requested_by": {"type": "string"}, "requested_at": {"type": "string", "format": "date-time"},
        "decided_by": {"type": "string"}, "decided_at": {"type": "string", "format": "date-time"}, "job": {"$ref": "#/components/schemas/Job"}}},
      "RetentionPlan": {"type": "object", "required": ["policy", "decisions"], "properties": {
        "policy": {"type": "object", "properties": {"last": {"type": "integer"}, "daily": {"type": "integer"}, "weekly": {"type": "integer"},
          "monthly": {"type": "integer"}, "time_zone": {"type": "string"}}},
        "decisions": {"type": "array", "items": {"type": "object", "required": ["id", "state", "action", "reasons"], "properties": {
          "id": {"type": "string"}, "taken_at": {"type": "string", "format": "date-time"}, "state": {"type": "string"},
          "action": {"type": "string", "enum": ["keep", "delete"]}, "reasons": {"type": "array", "items": {"type": "string"}}}}}}},
      "AuditEntry": {"type": "object", "required": ["id", "at", "actor", "action", "target", "outcome"], "properties": {
        "id": {"type": "integer", "format": "int64"}, "at": {"type": "string", "format": "date-time"}, "actor": {"type": "string"}, "role": {"type": "string"},
        "action": {"type": "string"}, "target": {"type": "string"}, "outcome": {"type": "string", "description": "allowed, refused (401/403), rejected (other 4xx), error (5xx); service actions: done, failed."},
        "status": {"type": "integer"}, "detail": {"type": "string"}}}
    }
  }
}
"""#
}
