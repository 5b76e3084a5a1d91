"""The embedded AWS of `make run`: moto's server, with its state kept in a file across runs.

`python -m tools.aws_server --port 5000 --state .local/stack-8000/aws-state.pickle` serves moto on the
port like `python -m moto.server`, after loading the state a previous run saved; it saves the state
every SAVE_EVERY seconds and when it stops (SIGTERM or SIGINT), so projects, users, keys, meters and
readings survive a restart of `make run`. The state file holds the fake KMS's key material: it is
written readable by its owner only, and `make run FRESH=1` deletes it.
"""
import argparse
import copyreg
import os
import pickle
import signal
import sys
import threading

SERVICES = ("dynamodb", "kms", "s3", "sqs")
SAVE_EVERY = 30.0


def _picklable_private_keys():
    """moto's KMS keys carry a cryptography private key object: pickle it as its PEM."""
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


def _picklable_locks():
    """moto's SQS queues hold a threading.Condition (export jobs' queue): pickle it as a new one."""
    copyreg.pickle(threading.Condition, lambda _condition: (threading.Condition, ()))


def _private_key(pem):
    from cryptography.hazmat.primitives import serialization

    return serialization.load_pem_private_key(pem, None)


def save(path):
    """Write every service's state to path (atomically: a crash leaves the previous file)."""
    from moto.backends import get_backend

    _picklable_locks()
    state = {name: dict(get_backend(name)) for name in SERVICES}  # type: ignore[call-overload]  # moto: a Literal per name
    data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    temporary = f"{path}.tmp"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as handle:
        handle.write(data)
    os.replace(temporary, path)


def load(path):
    """Put the saved state back into moto's backends; False when there is none."""
    from moto.backends import get_backend

    try:
        with open(path, "rb") as handle:
            state = pickle.load(handle)
    except FileNotFoundError:
        return False
    for name, accounts in state.items():
        backends = get_backend(name)
        for account_id, regions in accounts.items():
            backends[account_id] = regions
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--state", required=True, help="the file the state is kept in")
    args = parser.parse_args(argv)
    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    _picklable_private_keys()
    restored = load(args.state)
    print(f"state {'restored from' if restored else 'new; kept in'} {args.state}", flush=True)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server = ThreadedMotoServer(args.host, args.port, verbose=False)
    server.start()
    print(f"moto serving on http://{args.host}:{args.port}", flush=True)
    while not stopping.wait(SAVE_EVERY):
        try:
            save(args.state)
        except RuntimeError:      # a request changed a backend while it was pickled: next time
            pass
    server.stop()
    save(args.state)
    print("state saved", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
