from leakcheck import find_leaks


def test_the_leak_check_flags_emails_and_secrets() -> None:
    lines = [
        '{"event": "intakeq.request", "params": {"client": "[redacted]"}}',
        '{"event": "oops", "to": "ann@firststephouse.org"}',
        '{"event": "oops", "key": "sekrit-key"}',
        '{"event": "fine", "email": "[redacted email]"}',
    ]
    assert find_leaks(lines, ["sekrit-key"]) == [lines[1], lines[2]]
