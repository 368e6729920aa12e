"""The mirror ramp engine: plain, typed Python with no Ansible imports.

The action plugin plugins/action/mirror_ramp.py is a thin adapter over this package.
"""
