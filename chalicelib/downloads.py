"""Generated files in S3 (exports, charts): streamed uploads and short-lived presigned links to them.

Links are SigV4-presigned for 15 minutes; the bucket's lifecycle rule deletes the files after a day.
Nothing of the caller's credentials goes into a key or a link.
"""
import logging
import secrets
import urllib.parse

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import aws, clock, config

log = logging.getLogger("intellimeter.downloads")

LINK_SECONDS = 15 * 60
PART_BYTES = 8 * 1024 * 1024     # multipart parts (S3's minimum is 5 MiB, except the last)


def _object_key(project_id, kind, filename):
    return f"projects/{project_id}/{kind}/{secrets.token_hex(16)}/{filename}"


def content_disposition(filename):
    """An attachment header with an ASCII fallback name and the exact UTF-8 name (RFC 6266)."""
    fallback = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"


def upload_stream(project_id, kind, filename, media_type, chunks):
    """Write chunks (bytes) to a new object, multipart once they pass one part; returns the object key."""
    client = aws.s3()
    bucket = config.resource_name("FilesBucket")
    key = _object_key(project_id, kind, filename)
    headers = {"ContentType": media_type, "ContentDisposition": content_disposition(filename)}
    buffer = bytearray()
    upload_id = None
    parts = []
    try:
        for chunk in chunks:
            buffer += chunk
            if len(buffer) >= PART_BYTES:
                if upload_id is None:
                    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **headers)["UploadId"]
                part = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                          PartNumber=len(parts) + 1, Body=bytes(buffer))
                parts.append({"PartNumber": len(parts) + 1, "ETag": part["ETag"]})
                buffer = bytearray()
        if upload_id is None:
            client.put_object(Bucket=bucket, Key=key, Body=bytes(buffer), **headers)
            return key
        if buffer:
            part = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id,
                                      PartNumber=len(parts) + 1, Body=bytes(buffer))
            parts.append({"PartNumber": len(parts) + 1, "ETag": part["ETag"]})
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                         MultipartUpload={"Parts": parts})
        return key
    except BaseException:
        if upload_id is not None:
            _abort(client, bucket, key, upload_id)
        raise


def _abort(client, bucket, key, upload_id, attempts=3):
    """Abort a multipart upload, a few times if S3 fails; what still stays open the bucket's lifecycle rule
    aborts after a day. A failing abort never hides the error that made the upload stop."""
    for _attempt in range(attempts):
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            return
        except (ClientError, BotoCoreError) as error:
            if isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return
            log.warning("aborting multipart upload of %s failed (%s): retrying", key, type(error).__name__)
    log.error("multipart upload of %s left open: the bucket's lifecycle rule aborts it within a day", key)


def link(key, zone):
    """{"url", "expires"} of a presigned GET link to an object (expires shown in the project's zone)."""
    url = aws.s3().generate_presigned_url("get_object", Params={"Bucket": config.resource_name("FilesBucket"),
                                                                "Key": key}, ExpiresIn=LINK_SECONDS)
    return {"url": url, "expires": clock.local(clock.now() + LINK_SECONDS, zone)}
