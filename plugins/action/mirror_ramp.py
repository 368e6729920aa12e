"""mirror_ramp: the Ansible adapter of the mirrorramp engine.

Thin on purpose: validate the arguments, build the engine's objects, run, and turn the outcome
into one result dict. Every decision is made in the engine (plugins/mirrorramp); the
documentation is plugins/modules/mirror_ramp.py (`ansible-doc mirror_ramp`).
"""

from __future__ import annotations

from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

from mirrorramp.adapter import execute, execute_all
from mirrorramp.arguments import ARGUMENT_RULES, ARGUMENT_SPEC, requests_from_arguments
from mirrorramp.errors import ConfigError, MirrorRampError
from mirrorramp.results import row_line

display = Display()


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        del tmp
        validation, new_module_args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC, **ARGUMENT_RULES)
        del validation
        try:
            requests = requests_from_arguments(
                new_module_args,
                check_mode=bool(self._task.check_mode),
                diff=bool(self._task.diff),
            )
            if new_module_args.get("services") is None:  # one service: its own result, errors raised
                outcome = execute(requests[0], progress=display.display, debug=display.vvv, warn=display.warning)
            else:
                outcome = execute_all(requests, progress=display.display, debug=display.vvv, warn=display.warning)
                for row in outcome["results"]:
                    display.display(row_line(row))
        except ConfigError as e:
            raise AnsibleActionFail(f"mirror_ramp: {e}") from e
        except MirrorRampError as e:
            raise AnsibleActionFail(f"mirror_ramp: {e}", result={"service": new_module_args.get("service")}) from e
        for warning in outcome.pop("warnings", []):
            display.warning(warning)
        result.update(outcome)
        return result
