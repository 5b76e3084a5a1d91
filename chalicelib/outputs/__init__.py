"""What the API hands out as files in S3: readings and consumption exports (exports: /file) and the
export jobs too big for one request (export_jobs: /file/job and the queue's workers), written by
export_writers; charts (charts: /graphics) drawn by chart_render; uploads and presigned links
(downloads)."""
