"""Room-environment monitoring: readings, limits, alarms, the session gate, provenance.

Modules (one concept each):

- :mod:`~instrument_env.limits` — sensors (``config/facility.yaml``) joined with rules
  (``config/limits.yaml``): ``high``/``low`` thresholds and ``drift`` (peak-to-peak over a
  window) rules with warning and limit levels, delay, hysteresis, escalation, gating.
- :mod:`~instrument_env.models`, :mod:`~instrument_env.db` — tables ``env_*`` on their own
  declarative base and Alembic history (``alembic_version_env``) in the portal's database.
- :mod:`~instrument_env.ingest` — ``ingest_readings(session, readings, source=...)``:
  validate each reading (control characters, plausibility, clock bounds), refuse with
  reasons (kept in ``env_rejected_readings``), store idempotently on (sensor, quantity,
  ts, band); another value for a stored key is a conflict (refused, alarmed).
- :mod:`~instrument_env.payload` — size and nesting limits of a payload, before parsing.
- :mod:`~instrument_env.reduce` — raw samples → one-third-octave band velocity, VC class,
  RMS at the mains frequency, DC field.
- :mod:`~instrument_env.storage` — time-range queries, 1 min / 1 h rollups, retention.
- :mod:`~instrument_env.alarms` — per-rule state machine pending → firing →
  acknowledged → resolved, staleness ("no data") alarms, escalation outbox, history.
- :mod:`~instrument_env.gate` — ``evaluate_gate(session, instrument_id, at)``: allowed or
  not, with every reason (coverage, freshness, conflicts, limits, alarms); fails closed,
  bounded in time (:mod:`~instrument_env.deadline`).
- :mod:`~instrument_env.monitor` — the alarm monitor service (``cryofac env monitor``).
- :mod:`~instrument_env.provenance` — per-channel statistics, time out of limits,
  excursions and alarms of a time window, as JSON.
- :mod:`~instrument_env.sim` — realistic readings for every sensor, with faults.
- :mod:`~instrument_env.mqtt`, :mod:`~instrument_env.csvimport` — inputs besides HTTP;
  :mod:`~instrument_env.mqtt_payload` screens and parses one MQTT message (limits before
  parsing), :mod:`~instrument_env.mqtt_client` holds the broker options and builds the
  paho client, :mod:`~instrument_env.mqtt_publish` publishes (simulator, tests),
  :mod:`~instrument_env.mosquitto` runs a private broker from
  ``cryofac/config/mosquitto.conf`` (tests, benchmarks). See ``instrument_env/README.md``.
- :mod:`~instrument_env.cli` — ``cryofac env …`` (init-db, ingest-csv, mqtt, simulate,
  evaluate, gate, alarms, ack, provenance, maintain).

The portal's HTTP routes for readings, the gate and alarms live in ``portal/api/env.py``;
this package never imports the portal or Flask.
"""
