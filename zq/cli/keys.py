"""``zq keys``: make a CURVE key pair, show the public key of a key file."""

from __future__ import annotations

import click

from zq.cli.common import _clean, _echo_json, _with_client, client_options
from zq.security.keys import KeyFileExists, check_name, generate, public_key


def _name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_name(value)
    except ValueError as exc:
        raise click.BadParameter(_clean(exc), ctx=ctx, param=param) from None


@click.group()
def keys() -> None:
    """Make and read CURVE key pairs, for encrypted and authenticated connections.

    A pair is two files: NAME.key holds the public key (give it to the peers
    that must accept or reach NAME), NAME.key_secret holds the secret key
    (mode 0600; it never leaves the machine that uses it).

    \b
    Examples:
      zq keys generate broker --dir /etc/zq
      zq keys generate alice --dir keys
      zq keys show /etc/zq/broker.key
    """


@keys.command("generate")
@click.argument("name", callback=_name)
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".",
              show_default=True, help="Folder to write the pair in (made, mode 0700, "
                                      "if missing).")
@click.option("--force", is_flag=True, help="Replace an existing pair of that name.")
def keys_generate(name: str, directory: str, force: bool) -> None:
    """Write a new key pair: DIR/NAME.key and DIR/NAME.key_secret.

    NAME is letters, digits, '-', '_' and '.', not starting with '.' or '-'.
    Prints the files written and the public key.

    \b
    Examples:
      zq keys generate broker --dir /etc/zq
      zq keys generate alice --force
    """
    try:
        public_path, secret_path = generate(name, directory, force=force)
    except KeyFileExists as exc:
        raise click.ClickException(f"{_clean(exc)} (--force replaces the pair)") from None
    except ValueError as exc:
        raise click.ClickException(_clean(exc)) from None
    click.echo(f"public key file: {_clean(public_path)}")
    click.echo(f"secret key file: {_clean(secret_path)} (keep it private)")
    click.echo(f"public key: {public_key(public_path).decode()}")


@keys.command("show")
@click.argument("file", metavar="FILE")
def keys_show(file: str) -> None:
    """Print the public key of a key file (.key or .key_secret).

    The key is printed as its 40 Z85 characters, as ZeroMQ's CURVE options take it.

    \b
    Examples:
      zq keys show /etc/zq/broker.key
      zq keys show alice.key_secret    # the public key of a secret file
    """
    try:
        key = public_key(file)
    except ValueError as exc:
        raise click.ClickException(_clean(exc)) from None
    click.echo(key.decode())


@click.group()
def admin() -> None:
    """Broker-wide operations (they need the admin right when --permissions is on)."""


@admin.command("reload")
@client_options
def admin_reload(endpoint: str, connect_timeout: float) -> None:
    """Make the broker (or router) read its key folder, permissions file and cluster
    file again, as SIGHUP does. Sessions of removed keys, or of keys whose rights
    changed, end and their connections close. Prints what changed, as JSON.
    """
    result = _with_client(endpoint, "zq-admin",
                          lambda c: c._manage("reload", {}), timeout=connect_timeout)
    _echo_json(result)
