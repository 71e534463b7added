"""Uses a client generated from openapi/openapi.json against a running netsentinel.

Run by tests/tooling/openapi_client_check.sh, which generates the client (package
`netsentinel_client`, on sys.path) and starts the service: NS_BASE_URL is its address and
NS_API_KEY an admin key. Every call goes through the generated code with
raise_on_unexpected_status, so an answer the document does not describe, or one the client
cannot parse, fails here.
"""

import csv
import gzip
import io
import json
import os
import sys

from netsentinel_client import AuthenticatedClient
from netsentinel_client.api.alerts import export, export_one, get_alert, list_
from netsentinel_client.api.chart import chart_png, chart_svg
from netsentinel_client.api.model import fit, get_model
from netsentinel_client.api.samples import generate
from netsentinel_client.api.scoring import evaluate, score
from netsentinel_client.models import (
    AlertList,
    EvaluateResponse,
    ExportFormat,
    ExportOneFormat,
    FitContentEncoding,
    GeneratorConfig,
    ModelMeta,
    Problem,
    RecordsBody,
    SamplesResponse,
    ScoreResponse,
)
from netsentinel_client.types import File

FEATURES = ["bytes_sent", "bytes_received", "connections", "active_sessions"]


def check(condition, what):
    if not condition:
        sys.exit(f"openapi client check: {what}")
    print(f"ok: {what}")


def to_csv(records, columns):
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(columns)
    for r in records:
        w.writerow([r.get(c, "") for c in columns])
    return out.getvalue().encode()


def main():
    client = AuthenticatedClient(
        base_url=os.environ["NS_BASE_URL"],
        token=os.environ["NS_API_KEY"],
        raise_on_unexpected_status=True,
    )

    samples = generate.sync(client=client, body=GeneratorConfig.from_dict({"seed": 7}))
    check(isinstance(samples, SamplesResponse), "samples come back as SamplesResponse")
    records = [r.to_dict() for r in samples.records]
    check(len(records) == 720, f"720 sample records ({len(records)})")
    defaults = generate.sync(client=client, body=None)
    check(isinstance(defaults, SamplesResponse), "a null samples body means every default")

    # Fit on a CSV body, plain and gzip'd.
    body = to_csv(records, ["timestamp", *FEATURES, "label"])
    fitted = fit.sync(
        client=client,
        body=File(payload=io.BytesIO(body), file_name="train.csv", mime_type="text/csv"),
        n_estimators=60,
        seed=1,
    )
    check(isinstance(fitted, ModelMeta), f"fit on a CSV body: model v{getattr(fitted, 'version', '?')}")
    check(list(fitted.features) == FEATURES, f"the CSV's features ({fitted.features})")
    refit = fit.sync(
        client=client,
        body=File(payload=io.BytesIO(gzip.compress(body)), mime_type="text/csv"),
        n_estimators=60,
        seed=1,
        content_encoding=FitContentEncoding.GZIP,
    )
    check(
        isinstance(refit, ModelMeta) and refit.threshold == fitted.threshold,
        "fit on a gzip'd CSV body fits the same model",
    )
    check(isinstance(get_model.sync(client=client), ModelMeta), "the active model")

    # Score: JSON records (a burst raises an alert) and a CSV body.
    scored = score.sync(client=client, body=RecordsBody.from_dict({"records": records}))
    check(isinstance(scored, ScoreResponse), "score on JSON records")
    check(len(scored.results) == 720, "a result per record")
    check(scored.summary.n_anomalies > 0, f"anomalies found ({scored.summary.n_anomalies})")
    scored_csv = score.sync(
        client=client,
        body=File(payload=io.BytesIO(body), mime_type="text/csv"),
    )
    check(
        isinstance(scored_csv, ScoreResponse)
        and [r.score for r in scored_csv.results] == [r.score for r in scored.results],
        "score on a CSV body scores as the JSON records",
    )
    evaluated = evaluate.sync(client=client, body=File(payload=io.BytesIO(body), mime_type="text/csv"))
    check(isinstance(evaluated, EvaluateResponse) and evaluated.n_records == 720, "evaluate on a CSV body")

    # Alerts: the JSON list, one alert, and the SIEM exports as text.
    page = list_.sync(client=client, limit=5)
    check(isinstance(page, AlertList) and len(page.alerts) >= 1, "list alerts")
    alert_id = page.alerts[0].id
    one = get_alert.sync(alert_id, client=client)
    check(not isinstance(one, Problem) and one is not None, "one alert as JSON")
    for fmt in (ExportFormat.ECS, ExportFormat.OCSF, ExportFormat.SPLUNK_HEC):
        text = export.sync(fmt, client=client, limit=5)
        check(isinstance(text, str), f"export {fmt.value} comes back as text")
        lines = text.splitlines()
        check(len(lines) >= 1 and all(isinstance(json.loads(l), dict) for l in lines), f"{fmt.value}: NDJSON lines")
    cef = export.sync(ExportFormat.CEF, client=client, limit=5)
    check(isinstance(cef, str) and cef.startswith("CEF:"), "export cef comes back as CEF text")
    line = export_one.sync(alert_id, ExportOneFormat.ECS, client=client)
    check(isinstance(line, str) and json.loads(line)["event"]["id"] == alert_id, "one alert exported as ECS")

    # The chart as bytes.
    png = chart_png.sync(client=client, width=400, height=300)
    check(isinstance(png, File) and png.payload.read(8) == b"\x89PNG\r\n\x1a\n", "the chart as PNG bytes")
    svg = chart_svg.sync(client=client)
    check(isinstance(svg, File) and b"<svg" in svg.payload.read(4096), "the chart as SVG bytes")

    # A problem is parsed as a Problem, not raised as a parse error.
    bad = score.sync(client=client, body=RecordsBody.from_dict({"records": [{"nope": 1}]}))
    check(isinstance(bad, Problem) and bad.status == 422, f"a bad record answers a Problem ({getattr(bad, 'code', bad)})")
    print("openapi client check: all calls went through the generated client")


if __name__ == "__main__":
    main()
