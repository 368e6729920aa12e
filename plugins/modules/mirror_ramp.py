#!/usr/bin/python
# The documentation of the mirror_ramp action plugin (plugins/action/mirror_ramp.py); the
# action plugin runs on the controller, this module file is never executed.

DOCUMENTATION = r"""
module: mirror_ramp
short_description: Ramp the share of traffic mirrored to a candidate, gated by Prometheus
version_added: "0.1.0"
description:
  - Ramps the mirrored share step by step (for example 1%, 5%, 10%, 20% with a one-day hold
    each), checks Prometheus gates on every run, and removes the mirror at once when a gate
    fails. The removal is verified by reading the target back.
  - The ramp state lives with the target (the C(mirror-ramp.io/state) annotation of the
    VirtualService or HTTPRoute, or a state file beside an Envoy's route file) and is written with optimistic concurrency,
    so two runs at once never both advance and a killed run leaves a state the next run
    continues from.
  - Missing evidence (no data, NaN, +Inf, too few requests, Prometheus unreachable, slow or
    answering an error) is inconclusive, never a pass - the step holds.
  - In C(scheduled) mode one run checks the gates, rolls back on a breach, and advances at most
    one step, and only once the current step has been held for its whole duration with every gate
    passing over that duration. In C(watch) mode the same pass repeats every O(poll_interval)
    until the ramp is completed, rolled back or stopped, or O(deadline) passes.
  - Runs on the controller. Check mode writes nothing (a server-side dry run for istio and gateway-api) and says
    what would happen; C(--diff) shows the mirror settings before and after.
options:
  service:
    description:
      - Name of the service (DNS-1123 label); also the VirtualService (or HTTPRoute) name unless O(virtual_service) is set.
      - One service per task; O(services) runs many in one task. Give one of the two.
    type: str
  services:
    description:
      - Many services in one run, each with the task's steps, gates and settings (roles/mirror_ramp
        passes every service of the environment). Their fixed costs are paid once - one
        Prometheus query per gate for all of them (grouped by namespace and workload; custom
        PromQL and services with several mirror workloads ask their own), one LIST of
        VirtualServices (or HTTPRoutes) per namespace per pass, one API client.
      - A service that fails (its API calls, its query check) is reported in its row of
        C(results) and fails the task after the others ran - a rollback due on one service is
        never held back by another.
    type: list
    elements: dict
    suboptions:
      name: {description: Name of the service (as O(service))., type: str, required: true}
      namespace: {description: Its namespace; default O(namespace)., type: str}
      virtual_service: {description: Its VirtualService or HTTPRoute when the name differs (as O(virtual_service))., type: str}
      driver:
        description:
          - Its driver when it differs from O(driver), for a service on another mesh API (C(istio) or
            C(gateway-api)); one run ramps both kinds. Filter C(mirror_ramp_targets) sets it from each
            service's C(mesh_api).
        type: str
        choices: [istio, gateway-api, envoy]
      workloads:
        description: Its workloads (as O(workloads)).
        type: dict
        required: true
        suboptions:
          primary: {description: The primary workload., type: str, required: true}
          mirror: {description: The mirror workloads., type: list, elements: str, required: true}
          baseline: {description: The baseline shadow's workload (the primary's version mirrored the same share), the judge's baseline., type: str}
  namespace:
    description:
      - Namespace of the service and its VirtualService or HTTPRoute (DNS-1123 label).
      - Required with O(service); with O(services), the namespace of an entry that names none.
    type: str
  environment:
    description: Environment name (local, dev, staging, prod ...), for results and notifications.
    type: str
    required: true
  driver:
    description:
      - Where the mirror percentage is set.
      - C(istio) - the http route named C(mirror) of an Istio VirtualService (C(mirror) or
        C(mirrors) with C(mirrorPercentage)).
      - C(gateway-api) - the rule named C(mirror) of a Gateway API HTTPRoute
        (gateway.networking.k8s.io/v1), one C(RequestMirror) filter per mirror target; a whole
        percent is written as C(percent), any other as an exact C(fraction) (0.5 is 5/1000), so
        a step may have at most 7 decimal places. The rule's other filters are left as they are.
      - C(envoy) - the routes of an Envoy configured from files (O(envoy)).
      - Every write of C(istio) and C(gateway-api) carries the field manager C(mirror-ramp).
    type: str
    choices: [istio, gateway-api, envoy]
    default: istio
  virtual_service:
    description:
      - Name of the VirtualService (driver C(istio)) or HTTPRoute (driver C(gateway-api)) when it
        differs from O(service). Its mirrored http route or rule must be named C(mirror).
    type: str
  api_version:
    description: Version of networking.istio.io to talk to (driver C(istio); C(gateway-api) uses v1).
    type: str
    choices: [v1, v1beta1, v1alpha3]
    default: v1
  kubeconfig:
    description: Path of a kubeconfig file (istio and gateway-api drivers); default C(K8S_AUTH_KUBECONFIG), then C(~/.kube/config).
    type: path
  context:
    description: Context of the kubeconfig; default C(K8S_AUTH_CONTEXT).
    type: str
  host:
    description: URL of the Kubernetes API server; default C(K8S_AUTH_HOST).
    type: str
  api_key:
    description: Bearer token for the API server; default C(K8S_AUTH_API_KEY). Never shown in results or logs.
    type: str
  validate_certs:
    description: Verify the API server's certificate; default C(K8S_AUTH_VERIFY_SSL), then the kubeconfig.
    type: bool
  ca_cert:
    description: CA bundle of the API server; default C(K8S_AUTH_SSL_CA_CERT).
    type: path
  envoy:
    description:
      - Options of the envoy driver, for Envoy configured from files (filesystem RDS) - the local
        sandbox, or a standalone Envoy fleet. The mirror is set on the routes the route file marks
        (metadata C(mirror_ramp.mirror_clusters)), written by rename into the watched directory and
        confirmed from the admin C(/config_dump); the ramp state lives in a state file.
    type: dict
    suboptions:
      route_path: {description: The RDS route file Envoy watches (its directory is the watched one)., type: path, required: true}
      route_config_name: {description: Name of the RouteConfiguration in that file., type: str, required: true}
      admin_url: {description: "URL of Envoy's admin interface (http://127.0.0.1:PORT), without credentials.", type: str, required: true}
      state_dir: {description: Directory of the per-service state files., type: path, required: true}
      confirm_timeout: {description: Seconds a write may take to show in /config_dump., type: float, default: 2.0}
      http_timeout: {description: Seconds of each request to the admin interface., type: float, default: 2.0}
  steps:
    description:
      - The ramp plan, a list of C({percent, hold}). O(steps[].percent) may be fractional,
        0 < percent <= 100, strictly increasing. O(steps[].hold) is a duration such as C(30s),
        C(10m), C(12h), C(1d).
    type: list
    elements: dict
    required: true
  gates:
    description:
      - The checks made on every run. Query templates use C(${name}) placeholders, not Jinja
        (Ansible would template Jinja first) - C(${service}), C(${namespace}),
        C(${environment}), C(${primary_workload}), C(${mirror_workload}) (a regex alternation
        of the mirror workloads, for C(=~)), C(${window}). Values are quoted for PromQL.
      - C(thresholds) - list of C({name, query, operator, value, severity}); the gate passes while
        C(result <operator> value), operator one of C(<), C(<=), C(>), C(>=).
      - C(alerts) - list of C({name, alertname} or {name, matchers}); fails when the alert was
        firing at any time in the window (C(max_over_time(ALERTS{...}[window]))), also if it has
        resolved since; inconclusive when no loaded alert rule could fire an alert with these labels
        (its name C(alertname), every label it sets itself equal).
      - C(comparisons) - list of C({name, metric, max_delta | max_ratio}), mirror against primary -
        C(error_ratio) (mirror minus primary 5xx share) or C(p99_latency) (mirror p99 / primary p99).
      - C(judges) - list of C({name, metric, tolerance, confidence, min_samples, min_difference}),
        the mirror against its baseline (the baseline shadow, else the primary) as a statistical
        non-inferiority test over the step so far - C(latency) (the shift from Istio's buckets) or
        C(error_ratio); defaults tolerance 0.10 (latency) or 0.25 (error_ratio), confidence 0.99 over
        all the looks of a step (a confidence sequence), min_samples 200, min_difference 0.001
        (error_ratio only). Inconclusive until the evidence decides.
      - Every query is sent once before the first change; a syntax error fails the task naming the gate.
    type: dict
    default: {}
  min_requests:
    description: Requests the mirror workload must have served in the window; fewer makes the check inconclusive.
    type: int
    default: 100
  window:
    description: Look-back window of the gate queries while a step holds. Once the hold has elapsed, the gates are checked over the whole step too.
    type: str
    default: 10m
  workloads:
    description: The workloads as Istio's metrics name them (C(destination_workload)); required with O(service).
    type: dict
    suboptions:
      primary: {description: The primary workload., type: str, required: true}
      mirror: {description: The mirror workloads., type: list, elements: str, required: true}
      baseline:
        description:
          - The baseline shadow's workload - pods of the primary's version that receive the same mirrored share;
            the judge gates compare the mirror against it (else against the primary). Never one of the mirror workloads.
        type: str
  prometheus:
    description: The Prometheus the gates query.
    type: dict
    required: true
    suboptions:
      url: {description: Base URL of Prometheus (http or https)., type: str, required: true}
      token: {description: Bearer token; never shown in results or logs., type: str}
      ca_cert: {description: CA bundle of Prometheus., type: path}
      validate_certs: {description: Verify Prometheus' certificate., type: bool, default: true}
      timeout: {description: Timeout of one query (a duration)., type: str, default: 10s}
      retries: {description: Retries of a query after a connection error, a timeout or a 5xx (0..10), with backoff., type: int, default: 3}
  mode:
    description: C(scheduled) does one pass; C(watch) repeats it until done or O(deadline).
    type: str
    choices: [scheduled, watch]
    default: scheduled
  poll_interval:
    description: Time between two passes in C(watch) mode; a breach is rolled back within one interval of Prometheus seeing it.
    type: str
    default: 30s
  deadline:
    description: Longest time a C(watch) run lasts; the ramp goes on at the next run.
    type: str
    default: 1h
  inconclusive_budget:
    description: Consecutive inconclusive checks tolerated before O(inconclusive_action) applies.
    type: int
    default: 10
  inconclusive_action:
    description: What happens once the budget is exhausted - keep holding, or roll back.
    type: str
    choices: [hold, rollback]
    default: hold
  notify:
    description: Webhook URLs that receive the ramp's events (see O(notify_events), O(notify_format)). URLs are treated as secrets.
    type: list
    elements: str
    default: []
  restart:
    description: Start a rolled-back or stopped ramp again from its first step.
    type: bool
    default: false
  pause:
    description: Pause the ramp at its current percent (gates are still checked; a breach still rolls back).
    type: bool
    default: false
  resume:
    description: Resume a paused ramp; the hold of the current step starts again.
    type: bool
    default: false
  operation:
    description:
      - C(ramp) - check the gates, then start, advance, hold or roll back (the default).
      - C(stop) - emergency stop. Remove the mirror now, verify it by reading it back, and mark the ramp
        C(stopped) so that no later run puts it back before O(restart=true). Asks nothing of Prometheus.
      - C(status) - read the ramp and return RV(status). Changes nothing, asks nothing of Prometheus.
    type: str
    choices: [ramp, stop, status]
    default: ramp
  reason:
    description: Why the mirror is stopped (O(operation=stop)); recorded in the ramp state.
    type: str
    default: ""
  by:
    description: Who stops it (O(operation=stop)); recorded in the ramp state.
    type: str
    default: ""
  approval_steps:
    description:
      - 1-based steps that start only with an approval. When the step before has held with passing gates,
        the ramp waits (action C(wait), the gates keep watching) until a run is given O(approve).
    type: list
    elements: int
    default: []
  approve:
    description:
      - Approvals for this run, each C(<service>:<step>).
      - With O(services) and O(operation=ramp), an entry that names none of the services is refused (a typo
        would leave its step waiting); with O(service) alone, entries of other services are ignored.
    type: list
    elements: str
    default: []
  freeze:
    description:
      - Freeze windows, in which the mirror never goes up (no start, advance or restart); rollbacks still
        happen. Each window has C(days) (mon..sun) and/or C(hours) (C("START-END") in whole hours, across
        midnight when END < START), an optional C(name) and C(utc_offset) (C("+01:00"); UTC by default).
    type: list
    elements: dict
    default: []
  notify_format:
    description:
      - The webhook body. C(slack) - a Slack incoming-webhook message (text and Block Kit sections; a
        rollback names the gate, its value and threshold). C(json) - the plain event (kind, environment,
        service, namespace, step, steps, percent_before, percent, reason, at, at_iso, gate, dry_run).
    type: str
    choices: [slack, json]
    default: slack
  notify_events:
    description:
      - The events posted - started, advanced, held, waiting_for_approval, rolled_back, stopped, completed,
        paused, resumed, restarted, reconciled (drift repaired, an unconfirmed raise confirmed or reverted, a
        changed plan re-mapped). C(held) is not posted unless listed (it happens on every scheduled run).
      - Delivery is bounded (per-request timeouts, at most 3 attempts on errors, 429 and 5xx, a 10 s budget per
        event) and happens after the mirror was written and verified, so a failing receiver never delays a
        rollback; failures are warnings that name only the receiver's scheme and host.
    type: list
    elements: str
    choices: [started, advanced, held, waiting_for_approval, rolled_back, stopped, completed, paused, resumed, restarted, reconciled]
    default: [advanced, completed, paused, reconciled, restarted, resumed, rolled_back, started, stopped, waiting_for_approval]
  report_dir:
    description:
      - Where the ramp report goes - each run appends its passes to C(<report_dir>/<environment>/<service>.jsonl)
        and redraws C(<service>.html) and C(<service>.png) there (mirror percent over time with the steps, each
        gate against its threshold).
      - Check mode records nothing. A report that cannot be written is a warning, never a failed ramp.
      - Unset, no report is written.
    type: path
attributes:
  check_mode: {support: full}
  diff_mode: {support: full}
author: mirror-ramp
"""

EXAMPLES = r"""
- name: Ramp the mirror of user-service, one step a day at most
  mirror_ramp:
    service: user-service
    namespace: shop
    environment: prod
    driver: istio
    workloads: {primary: user-service-v1, mirror: [user-service-v2]}
    steps:
      - {percent: 1, hold: 1d}
      - {percent: 5, hold: 1d}
      - {percent: 10, hold: 1d}
      - {percent: 20, hold: 1d}
    gates:
      thresholds:
        - name: mirror-5xx-ratio
          query: >-
            sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="${namespace}",
            destination_workload=~"${mirror_workload}",response_code=~"5.."}[${window}]))
            / sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="${namespace}",
            destination_workload=~"${mirror_workload}"}[${window}]))
          operator: "<="
          value: 0.05
      alerts:
        - {name: no-critical-alert, matchers: {alertname: MirrorErrorRatioHigh, severity: critical, service: user-service}}
    prometheus: {url: "http://prometheus.monitoring.svc:9090", token: "{{ vault_prometheus_token }}"}

- name: Ramp every service of the environment in one run
  mirror_ramp:
    services:
      - {name: user-service, namespace: shop, workloads: {primary: user-service-v1, mirror: [user-service-v2]}}
      - {name: order-service, namespace: shop, workloads: {primary: order-service-v1, mirror: [order-service-v2]}}
    environment: prod
    steps: [{percent: 1, hold: 1d}, {percent: 5, hold: 1d}]
    gates: {thresholds: [{name: mirror-5xx, metric: error_ratio, operator: "<", value: 0.05}]}
    prometheus: {url: "http://prometheus.monitoring.svc:9090"}
  register: ramp
  # ramp.results: one row per service, each with the keys below
"""

RETURN = r"""
results:
  description: With O(services) - one row per service, with the keys below (service, state, percent, msg ...);
    a failed service's row has C(failed=true) and its error in C(msg). The task's own C(changed) is true
    if any service changed.
  type: list
  elements: dict
  returned: when O(services) is given
status:
  description: With O(operation=status) - service, environment, state, step ("2/4"), percent, since, next_advance
    (UTC times) and last_gates (name, verdict, value, operator, threshold of each gate at the last check).
  type: dict
  returned: when operation is status
report:
  description: The HTML ramp report written by this run (when O(report_dir) is set and not in check mode).
  type: str
  returned: when a report was written
state:
  description: The ramp state after the run - pending, ramping, paused, completed, rolled_back or stopped.
  type: str
  returned: always
step:
  description: The current step, 1-based (0 before the first step).
  type: int
  returned: always
steps:
  description: Number of steps in the plan.
  type: int
  returned: always
percent:
  description: The live mirrored percent after the run (0 = no mirror fields at all).
  type: float
  returned: always
previous_percent:
  description: The mirrored percent before the run.
  type: float
  returned: always
action:
  description: What the run did - start, advance, hold, rollback, complete, stay, pause, resume, restart.
  type: str
  returned: always
gates:
  description: Per gate - name, kind, the rendered query, value, threshold, operator, verdict (pass, fail, inconclusive) and reason.
  type: list
  elements: dict
  returned: always
rollback:
  description: Why the mirror was removed - reason, gate, value, threshold, at; null if it was not.
  type: dict
  returned: always
seconds_left:
  description: Seconds until the current step may advance, when holding.
  type: float
  returned: always
conflicts:
  description: How often another run changed the target first (the run re-read and decided again).
  type: int
  returned: always
passes:
  description: Passes made (1 in scheduled mode).
  type: int
  returned: always
window:
  description: The look-back window of the gate queries, as PromQL.
  type: str
  returned: always
msg:
  description: One line for humans - what happened and why.
  type: str
  returned: always
"""
