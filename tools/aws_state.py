"""The embedded AWS's state on disk, saved incrementally: a save writes only what changed since the last one.

moto 5.2 keeps its state in memory and has no persistence of its own (its request recorder cannot
replay KMS, whose key material is random), so `make run`'s moto server pickles its backends. A
year of a 300-meter building is ~400 MB of pickled day items: writing all of it at every stop is
what made stops slow. Here the two big kinds of container, a DynamoDB table's items and an S3
bucket's objects, are cut into SHARDS shards (by a hash of the partition key, or of the object key)
and each shard is a file of its own; everything else (tables' definitions, buckets' settings, the
queues and their messages, the KMS keys) is the small skeleton, pickled whole. The server tells the
store what each request may change (touch_*), and a save writes the skeleton and the shards touched
since the last save; a stop then costs what changed in the last few seconds, not the state's size.

The directory holds manifest.json, the list of files that make up the state; it is replaced
atomically after the files it names are written, and files it no longer names are deleted after,
so a process killed mid-save leaves the previous state whole. The files hold the fake KMS's key
material: they are written readable by their owner only.
"""
import contextlib
import copyreg
import hashlib
import json
import os
import pickle
import threading
import time
import zlib
from collections import defaultdict

SERVICES = ("dynamodb", "kms", "s3", "sqs")
SHARDS = 256
ALL = None            # in a touch: every table, bucket or shard
MANIFEST = "manifest.json"
FORMAT = 1


def _private_key(pem):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, None)


def _register_picklers():
    """What moto holds that pickle can't take as is: KMS private keys (as their PEM), SQS's locks (new ones)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    def reduce(key):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        return _private_key, (pem,)

    for base in (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey):
        for cls in {base, *base.__subclasses__()}:
            copyreg.pickle(cls, reduce)
    # The concrete classes live in cryptography's Rust bindings: register the ones moto makes.
    copyreg.pickle(type(rsa.generate_private_key(65537, 2048)), reduce)
    copyreg.pickle(type(ec.generate_private_key(ec.SECP256R1())), reduce)
    copyreg.pickle(threading.Condition, lambda _condition: (threading.Condition, ()))


def _containers():
    """(id, container) of every table's items and every bucket's objects in moto's backends now."""
    from moto.backends import get_backend

    for account, regions in list(get_backend("dynamodb").items()):
        for region, backend in list(regions.items()):
            for name, table in list(backend.tables.items()):
                yield ("dynamodb", account, region, name), table.items
    for account, partitions in list(get_backend("s3").items()):
        for partition, s3_backend in list(partitions.items()):
            for name, bucket in list(s3_backend.buckets.items()):
                yield ("s3", account, partition, name), bucket.keys


def _shard_of_text(text):
    return zlib.crc32(text.encode("utf-8", "surrogatepass")) % SHARDS


def _shard(service, key):
    """The shard of a container's key: a table's partition key (a DynamoType), a bucket's object key (str)."""
    if service == "s3":
        return _shard_of_text(key)
    if key.type == "S":
        return _shard_of_text(key.value)
    return _shard_of_text(repr((key.type, str(key.value))))


def _empty_like(container):
    """A container of the same kind, empty (a defaultdict keeps its factory; moto's key store its class)."""
    shell = type(container).__new__(type(container))  # type: ignore[call-overload]  # any container class
    if isinstance(container, defaultdict):
        shell.default_factory = container.default_factory
    if hasattr(container, "__dict__"):
        shell.__dict__.update(vars(container))
    return shell


class _Saved:
    """What the manifest says of one container: the object last saved (to notice a new one) and its files."""

    def __init__(self, container, files):
        self.container = container
        self.files = files                  # shard → file name


class Store:
    """The state directory of one moto server: load it, note what requests change, save what changed."""

    def __init__(self, directory):
        self.directory = os.path.abspath(directory)
        self.legacy = self.directory + ".pickle"    # the one-file state of earlier versions, read once
        self._marks = set()                 # ("dynamodb", table or ALL, shard or ALL), ("s3", bucket or ALL, whole)
        self._skeleton_dirty = True
        self._saved = {}                    # container id → _Saved
        self._objects = {}                  # bucket id → {object key: its versions when last saved}
        self._skeleton_file = None
        self._generation = 0
        self._partition_keys = {}           # table name → partition key attribute (cache)
        self._full = False                  # after a failed write: the next save writes everything
        _register_picklers()

    # ---- what a request may change (called by the server, one request at a time per container) ---

    def touch(self):
        """Something outside the tables' items and the buckets' objects may have changed (queues, keys...)."""
        self._skeleton_dirty = True

    def touch_item(self, table, attributes):
        """An item was written or deleted: attributes are its key or item in DynamoDB's JSON ({"S": "..."})."""
        name = self._partition_key(table)
        value = (attributes or {}).get(name) if name else None
        if not isinstance(value, dict) or not isinstance(value.get("S"), str):
            self.touch_table(table)          # another key type, or unknown: the whole table
            return
        self._skeleton_dirty = True
        self._marks.add(("dynamodb", table, _shard_of_text(value["S"])))

    def touch_table(self, table=ALL):
        """Anything of a table (or of every table) may have changed: its definition, any item."""
        self._partition_keys.clear()
        self._skeleton_dirty = True
        self._marks.add(("dynamodb", table, ALL))

    def touch_bucket(self, bucket=ALL, whole=False):
        """Objects of a bucket (or of every bucket) were written or deleted; whole: possibly changed in place."""
        self._skeleton_dirty = True
        self._marks.add(("s3", bucket, whole))

    def touch_all(self):
        self.touch_table(ALL)
        self.touch_bucket(ALL, whole=True)

    def _partition_key(self, table):
        if table not in self._partition_keys:
            from moto.backends import get_backend

            found = None
            try:
                for regions in list(get_backend("dynamodb").values()):
                    for backend in list(regions.values()):
                        if table in backend.tables:
                            found = backend.tables[table].hash_key_attr
            except (RuntimeError, KeyError):     # a table made or dropped meanwhile: ask again next time
                return None
            if found is None:
                return None
            self._partition_keys[table] = found
        return self._partition_keys[table]

    # ---- saving ------------------------------------------------------------------------------

    def dirty(self):
        return bool(self._skeleton_dirty or self._marks or self._full)

    def save(self, exclusive=None):
        """Write what changed since the last save; exclusive: a context in which no request runs.

        Returns (files written, bytes written, seconds), or None when nothing changed. What is
        pickled is taken inside `exclusive` (the server pauses for that only); files are written after.
        """
        started = time.perf_counter()
        with exclusive or contextlib.nullcontext():
            if not self.dirty() and self._skeleton_file:
                return None
            marks, self._marks = self._marks, set()
            full, self._full = self._full, False
            self._skeleton_dirty = False
            containers = list(_containers())
            shards = {cid: self._shards_to_write(cid, container, marks, full) for cid, container in containers}
            blobs = {cid: self._pickle_shards(cid, container, shards[cid])
                     for cid, container in containers if shards[cid]}
            skeleton = self._pickle_skeleton({id(container): cid for cid, container in containers})
            current = {cid: container for cid, container in containers}
        try:
            return self._write(skeleton, blobs, current, started)
        except BaseException:
            self._full = True                 # what was taken is lost: write everything next time
            raise

    def _shards_to_write(self, cid, container, marks, full):
        service, name = cid[0], cid[3]
        saved = self._saved.get(cid)
        if full or saved is None or saved.container is not container:
            return set(range(SHARDS))
        if service == "dynamodb":
            touched = {shard for kind, table, shard in marks if kind == service and table in (name, ALL)}
            return set(range(SHARDS)) if ALL in touched else touched
        wholes = {whole for kind, bucket, whole in marks if kind == service and bucket in (name, ALL)}
        if True in wholes:
            return set(range(SHARDS))
        if not wholes:
            return set()
        # Objects are replaced, never changed in place, by PUT, copy, multipart completion and DELETE:
        # the shards whose objects are not the very ones saved last time.
        before = self._objects.get(cid, {})
        now = dict.items(container)
        changed = {_shard(service, key) for key, versions in now
                   if key not in before or not _same(before[key], versions)}
        changed.update(_shard(service, key) for key in before.keys() - dict.keys(container))
        return changed

    def _pickle_shards(self, cid, container, shards):
        """{shard: pickled {key: value} of the container's keys in that shard, or None when it has none}."""
        service = cid[0]
        grouped: defaultdict[int, dict] = defaultdict(dict)
        for key, value in dict.items(container):
            shard = _shard(service, key)
            if shard in shards:
                grouped[shard][key] = value
        if service == "s3":
            self._objects[cid] = {key: tuple(versions) for key, versions in dict.items(container)}
        return {shard: (pickle.dumps(grouped[shard], pickle.HIGHEST_PROTOCOL) if shard in grouped else None)
                for shard in shards}

    def _pickle_skeleton(self, cut):
        state = {name: dict(_backend(name)) for name in SERVICES}
        return _dumps_cut(state, cut)

    def _write(self, skeleton, blobs, current, started):
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        self._generation += 1
        generation = self._generation
        written = [0, 0]

        def write(name, data):
            path = os.path.join(self.directory, name)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
                handle.write(data)
            written[0] += 1
            written[1] += len(data)
            return name

        skeleton_file = write(f"skeleton-{generation}.pickle", skeleton)
        saved = {}
        for cid, container in current.items():
            previous = self._saved.get(cid)
            files = dict(previous.files) if previous is not None and previous.container is container else {}
            for shard, data in blobs.get(cid, {}).items():
                if data is None:
                    files.pop(shard, None)
                else:
                    files[shard] = write(f"{_container_name(cid)}-{shard}-{generation}.pickle", data)
            saved[cid] = _Saved(container, files)
        manifest = {"format": FORMAT, "generation": generation, "skeleton": skeleton_file,
                    "containers": [{"id": list(cid), "shards": {str(s): f for s, f in item.files.items()}}
                                   for cid, item in saved.items()]}
        temporary = os.path.join(self.directory, MANIFEST + ".tmp")
        with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
            json.dump(manifest, handle)
        os.replace(temporary, os.path.join(self.directory, MANIFEST))     # the commit
        self._saved, self._skeleton_file = saved, skeleton_file
        self._remove_unlisted()
        if os.path.exists(self.legacy):
            os.remove(self.legacy)
        return written[0], written[1], time.perf_counter() - started

    def _listed(self):
        names = {MANIFEST}
        if self._skeleton_file:
            names.add(self._skeleton_file)
        for item in self._saved.values():
            names.update(item.files.values())
        return names

    def _remove_unlisted(self):
        """Files of earlier saves, and of a save cut short, that the manifest no longer names."""
        listed = self._listed()
        for name in os.listdir(self.directory):
            if name not in listed:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(self.directory, name))

    # ---- loading -----------------------------------------------------------------------------

    def exists(self):
        return os.path.exists(os.path.join(self.directory, MANIFEST)) or os.path.exists(self.legacy)

    def load(self):
        """Put the saved state into moto's backends; False when there is none."""
        try:
            with open(os.path.join(self.directory, MANIFEST)) as handle:
                manifest = json.load(handle)
        except FileNotFoundError:
            return self._load_legacy()
        if manifest.get("format") != FORMAT:
            raise RuntimeError(f"{self.directory}: state format {manifest.get('format')}, this version reads {FORMAT}")
        files = {tuple(item["id"]): {int(s): f for s, f in item["shards"].items()} for item in manifest["containers"]}
        filled = {}

        def fill(cid, shell):
            for name in files.get(cid, {}).values():
                with open(os.path.join(self.directory, name), "rb") as handle:
                    dict.update(shell, pickle.load(handle))
            filled[cid] = shell

        with open(os.path.join(self.directory, manifest["skeleton"]), "rb") as skeleton:
            state = _CutUnpickler(skeleton, fill).load()
        _install(state)
        self._generation = manifest["generation"]
        self._skeleton_file = manifest["skeleton"]
        self._saved = {cid: _Saved(filled[cid], files.get(cid, {})) for cid in filled}
        self._objects = {cid: {key: tuple(versions) for key, versions in dict.items(container)}
                         for cid, container in filled.items() if cid[0] == "s3"}
        self._skeleton_dirty = False
        self._remove_unlisted()
        return True

    def _load_legacy(self):
        """The one pickle of every backend that earlier versions wrote; the next save writes the new layout."""
        try:
            with open(self.legacy, "rb") as handle:
                state = pickle.load(handle)
        except FileNotFoundError:
            return False
        _install(state)
        self._full = True
        return True


def _same(before, versions):
    return len(before) == len(versions) and all(a is b for a, b in zip(before, versions))


def _container_name(cid):
    return f"{cid[0]}-{hashlib.sha256(json.dumps(list(cid)).encode()).hexdigest()[:12]}"


def _backend(name):
    from moto.backends import get_backend

    return get_backend(name)


class _CutPickler(pickle.Pickler):
    """Pickles the skeleton: each container in `cut` becomes a reference (its id and an empty container like it)."""

    def __init__(self, file, cut):
        super().__init__(file, pickle.HIGHEST_PROTOCOL)
        self.cut = cut

    def persistent_id(self, obj):
        cid = self.cut.get(id(obj))
        return None if cid is None else ("container", cid, _empty_like(obj))


class _CutUnpickler(pickle.Unpickler):
    def __init__(self, file, fill):
        super().__init__(file)
        self.fill = fill

    def persistent_load(self, pid):
        _kind, cid, shell = pid
        self.fill(tuple(cid), shell)
        return shell


def _dumps_cut(state, cut):
    import io

    buffer = io.BytesIO()
    _CutPickler(buffer, cut).dump(state)
    return buffer.getvalue()


def _install(state):
    """Loaded backends into moto, and S3's index of which account owns which bucket (which moto keeps
    outside the backends: without it a bucket looks free, and provisioning makes it again, empty)."""
    for name, accounts in state.items():
        backends = _backend(name)
        for account_id, regions in accounts.items():
            backends[account_id] = regions
    s3 = _backend("s3")
    for account_id, partitions in s3.items():
        for partition, backend in partitions.items():
            for bucket in backend.buckets:
                s3.bucket_accounts[bucket] = (partition, account_id)
