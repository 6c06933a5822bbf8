"""junit.xml: one test case per cell, for CI test reporting (known failures and skips as skipped cases)."""

from __future__ import annotations

import json
from xml.etree import ElementTree as ET

from ice.scenario.result import CellResult, Status


def junit_xml(results: list[CellResult], backend: str, seconds: float) -> str:
    failures = sum(r.status is Status.FAIL for r in results)
    suite = ET.Element("testsuite", name=f"icelab-matrix-{backend}", tests=str(len(results)),
                       failures=str(failures), errors="0", time=f"{seconds:.3f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"matrix.{backend}", name=r.cell.name,
                             time=f"{r.seconds or 0:.3f}")
        if r.status is Status.FAIL:
            fail = ET.SubElement(case, "failure", message=r.reason or f"observed {r.observed.value}")
            fail.text = json.dumps(r.as_json(), indent=2)
        elif r.status is Status.SKIPPED:
            ET.SubElement(case, "skipped", message=r.reason)
        elif r.status is Status.KNOWN_FAILURE:
            known = r.expectation.known_failure if r.expectation else ""
            ET.SubElement(case, "skipped", message=f"known failure: {known} ({r.reason})")
        elif r.status is Status.UNEXPECTED_PASS:
            ET.SubElement(case, "system-out").text = "unexpectedly passing: remove its known_failure pin"
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)
