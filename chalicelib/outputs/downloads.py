"""Generated files in S3 (exports, charts): streamed uploads and short-lived presigned links to them.

Links are SigV4-presigned for 15 minutes; the bucket's lifecycle rule deletes the files after a day.
Nothing of the caller's credentials goes into a key or a link.
"""
import logging
import secrets
import urllib.parse
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import tzinfo
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib.platform import aws, clock, config

log = logging.getLogger("intellimeter.downloads")

LINK_SECONDS = 15 * 60
PART_BYTES = 8 * 1024 * 1024     # multipart parts (S3's minimum is 5 MiB, except the last)
MIN_PART_BYTES = 5 * 1024 * 1024
MAX_COPY_BYTES = 5 * 1024 ** 3   # S3's largest part
COPY_THREADS = 8                 # UploadPartCopy calls at once when joining an export job's parts


class Segment(NamedTuple):
    """A byte range of a stored object: what assemble copies into the object it writes."""

    key: str
    offset: int
    length: int


def _ascii(filename: str) -> str:
    """The file name with every character but ASCII letters, digits, '-', '_' and '.' as '_'."""
    return "".join(ch if ch.isascii() and (ch.isalnum() or ch in "-_.") else "_" for ch in filename)


def safe_key_part(filename: str) -> str:
    """A file name as one safe segment of an object key: ASCII letters, digits, '-', '_' and '.' only.

    A display name such as 'a/../../b' would otherwise put '/../' in the link, which clients normalise
    (the download then 404s). The exact name is kept for the download in Content-Disposition.
    """
    return _ascii(filename).strip(".") or "file"


def _object_key(project_id: int, kind: str, filename: str) -> str:
    return f"projects/{project_id}/{kind}/{secrets.token_hex(16)}/{safe_key_part(filename)}"


def content_disposition(filename: str) -> str:
    """An attachment header with an ASCII fallback name and the exact UTF-8 name (RFC 6266)."""
    return f"attachment; filename=\"{_ascii(filename)}\"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"


def upload_stream(project_id: int, kind: str, filename: str, media_type: str, chunks: Iterable[bytes]) -> str:
    """Write chunks (bytes) to a new object, multipart once they pass one part; returns the object key."""
    key = _object_key(project_id, kind, filename)
    return write_object(key, media_type, chunks, filename)


def write_object(key: str, media_type: str, chunks: Iterable[bytes], filename: str | None = None) -> str:
    """Write chunks (bytes) to the object at key (replacing it), multipart once they pass one part.

    A download (filename given) gets its Content-Disposition. Returns the key.
    """
    client = aws.s3()
    bucket = config.resource_name("FilesBucket")
    headers = {"ContentType": media_type}
    if filename is not None:
        headers["ContentDisposition"] = content_disposition(filename)
    buffer = bytearray()
    upload_id = None
    parts: list[dict[str, Any]] = []
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


def _abort(client: Any, bucket: str, key: str, upload_id: str, attempts: int = 3) -> None:
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


def read_range(key: str, offset: int, length: int) -> bytes:
    """length bytes of an object from offset."""
    answer = aws.s3().get_object(Bucket=config.resource_name("FilesBucket"), Key=key,
                                 Range=f"bytes={offset}-{offset + length - 1}")
    return answer["Body"].read()


def assemble(key: str, media_type: str, filename: str, segments: Iterable[Segment | bytes]) -> str:
    """Write one object from segments in order: bytes, or Segment ranges of stored objects.

    A multipart upload: a range at least MIN_PART_BYTES long that starts a part is copied by S3
    itself (UploadPartCopy, nothing passes through here); short pieces are gathered into parts of
    PART_BYTES (S3 wants every part but the last to be 5 MiB or more). Memory stays under one part.
    The copies run COPY_THREADS at a time: joining a year of 32 parts takes a few copies' time.
    """
    client = aws.s3()
    bucket = config.resource_name("FilesBucket")
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType=media_type,
                                               ContentDisposition=content_disposition(filename))["UploadId"]
    try:
        with ThreadPoolExecutor(max_workers=COPY_THREADS) as pool:   # S3 copies the big parts side by side
            assembly = _Assembly(client, bucket, key, upload_id, pool)
            for segment in segments:
                if isinstance(segment, (bytes, bytearray)):
                    assembly.add(segment)
                else:
                    assembly.add_range(*segment)
            parts = assembly.finish()
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                         MultipartUpload={"Parts": sorted(parts, key=lambda p: p["PartNumber"])})
        return key
    except BaseException:
        _abort(client, bucket, key, upload_id)
        raise


class _Assembly:
    """The parts of a multipart upload being joined (assemble): short pieces gathered into a buffer sent as
    a part once it holds PART_BYTES; ranges long enough to start a part copied by S3 in the pool."""

    def __init__(self, client: Any, bucket: str, key: str, upload_id: str, pool: ThreadPoolExecutor) -> None:
        self.client, self.bucket, self.key, self.upload_id, self.pool = client, bucket, key, upload_id, pool
        self.parts: list[dict[str, Any]] = []
        self.copies: list[Future[dict[str, Any]]] = []
        self.buffer = bytearray()
        self.numbers = iter(range(1, 10_001))

    def add(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= PART_BYTES:
            self.flush()

    def add_range(self, source: str, offset: int, length: int) -> None:
        while length > 0:
            if not self.buffer and length >= MIN_PART_BYTES:
                size = min(length, MAX_COPY_BYTES)
                self.copies.append(self.pool.submit(self.copy, next(self.numbers), source, offset, offset + size - 1))
            else:
                size = min(length, PART_BYTES - len(self.buffer))
                self.add(read_range(source, offset, size))
            offset += size
            length -= size

    def flush(self) -> None:
        number = next(self.numbers)
        answer = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                         PartNumber=number, Body=bytes(self.buffer))
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self.buffer.clear()

    def copy(self, number: int, source: str, first: int, last: int) -> dict[str, Any]:
        answer = self.client.upload_part_copy(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              PartNumber=number, CopySource={"Bucket": self.bucket, "Key": source},
                                              CopySourceRange=f"bytes={first}-{last}")
        return {"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]}

    def finish(self) -> list[dict[str, Any]]:
        """Send what the buffer holds (or the one empty part of an empty file); every part, copies done."""
        if self.buffer or not (self.parts or self.copies):
            self.flush()
        return self.parts + [done.result() for done in self.copies]


def link(key: str, zone: tzinfo) -> dict[str, Any]:
    """{"url", "expires"} of a presigned GET link to an object (expires shown in the project's zone)."""
    url = aws.s3().generate_presigned_url("get_object", Params={"Bucket": config.resource_name("FilesBucket"),
                                                                "Key": key}, ExpiresIn=LINK_SECONDS)
    return {"url": url, "expires": clock.local(clock.now() + LINK_SECONDS, zone)}
