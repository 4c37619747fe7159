"""Operation histories of Kafka clients and a checker that judges them (issue 20).

    history.record   the JSON-lines format, HistoryWriter, RecordingProducer/Consumer, final_read
    history.checker  the anomaly definitions, Checker, check_file, summary
    python -m history check FILE.jsonl[.gz] [--examples N] [--json OUT]   (run from tests/)
"""
