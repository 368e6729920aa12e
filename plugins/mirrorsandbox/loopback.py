"""The sandbox's servers listen on loopback only: the argparse type that says so."""

from __future__ import annotations

import argparse
import ipaddress


def loopback_host(host: str) -> str:
    """`host` if it is localhost or a loopback address; argparse's error otherwise."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise argparse.ArgumentTypeError(f"{host} is not a loopback address: the sandbox listens on loopback only")
    return host
