"""Drives a running grok2api with the official OpenAI Python client.

Usage: openai_client.py BASE_URL API_KEY PROMPT EXPECTED_TEXT EXPECTED_REASONING

Checks a non-streamed and a streamed chat completion against the simulator's deterministic
answer, plus the model list and an error surfaced as the client's own exception type.
Prints one line per check and exits non-zero on the first failure.
"""

import sys

import openai


def main() -> int:
    base_url, api_key, prompt, expected_text, expected_reasoning = sys.argv[1:6]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=api_key, max_retries=0, timeout=30)

    models = [m.id for m in client.models.list()]
    assert "grok-4.1-fast" in models, models
    print("models: ok")

    completion = client.chat.completions.create(
        model="grok-4.1-fast", messages=[{"role": "user", "content": prompt}]
    )
    content = completion.choices[0].message.content
    assert content == expected_text, (content, expected_text)
    assert completion.choices[0].finish_reason == "stop"
    print("non-stream: ok")

    stream = client.chat.completions.create(
        model="grok-4.1-fast", messages=[{"role": "user", "content": prompt}], stream=True
    )
    pieces, finish = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    streamed = "".join(pieces)
    want = f"<think>\n{expected_reasoning}\n</think>\n{expected_text}"
    assert streamed == want, (streamed, want)
    assert finish == "stop", finish
    print("stream: ok")

    try:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
        raise AssertionError("expected BadRequestError")
    except openai.BadRequestError as e:
        assert e.code == "model_not_found", e.code
    print("errors: ok")

    bad = openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong", max_retries=0)
    try:
        bad.models.list()
        raise AssertionError("expected AuthenticationError")
    except openai.AuthenticationError:
        pass
    print("auth: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
