"""What crosses Temporal between the activities and the workflows (core/messages.py)."""

from temporalio.converter import DataConverter

from core.messages import FailureDetail


def test_a_failure_detail_reaches_the_workflow_as_the_activity_sent_it() -> None:
    # The workflow decodes an ApplicationError's details with no type to decode them to.
    converter = DataConverter.default.payload_converter
    sent = FailureDetail("compute-nodes", "quota")
    received = converter.from_payloads(converter.to_payloads([sent]))
    assert FailureDetail.of(received, default_step="provision") == sent


def test_a_failure_recorded_before_the_detail_was_one_object_reads_as_it_did() -> None:
    # Recorded histories carry the step and the class as two values (tests/histories).
    assert FailureDetail.of(["storage", "bad configuration"], "provision") == FailureDetail(
        "storage", "bad configuration"
    )
    assert FailureDetail.of([], "provision") == FailureDetail("provision", "bad configuration")
