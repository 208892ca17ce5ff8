"""End-to-end tests with the real `openai`, `langchain-openai` and `huggingface_hub` clients against `kestrel serve`.

Run by `tests/e2e/run.sh`, which builds the binary, makes a venv, starts the server on the
registry-hosted Qwen2.5-Coder-0.5B-Instruct GGUF and sets KESTREL_BASE_URL.
"""

import json
import os
import urllib.error
import urllib.request

import openai
import pytest

BASE_URL = os.environ.get("KESTREL_BASE_URL", "http://127.0.0.1:18000/v1")
MODEL = os.environ.get("KESTREL_MODEL", "qwen")


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE_URL, api_key="EMPTY")


def test_models(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_chat_non_stream(client):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0
    )
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_stream_with_usage(client):
    messages = [{"role": "user", "content": "Count to five."}]
    stream = client.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=24, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0
    # Streamed and non-streamed greedy output agree.
    r = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, temperature=0)
    assert r.choices[0].message.content == text


def test_completions(client):
    r = client.completions.create(model=MODEL, prompt="def fibonacci(n):", max_tokens=16, temperature=0)
    assert r.choices[0].text
    r2 = client.completions.create(model=MODEL, prompt=["a", "b"], max_tokens=2, temperature=0)
    assert [c.index for c in r2.choices] == [0, 1]


def test_n2_and_seed(client):
    kwargs = dict(
        model=MODEL, messages=[{"role": "user", "content": "Name a fruit."}], max_tokens=8, temperature=1.0, seed=7
    )
    a = client.chat.completions.create(n=2, **kwargs)
    assert len(a.choices) == 2
    b = client.chat.completions.create(n=2, **kwargs)
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]


def test_logprobs(client):
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) >= 1
    assert len(content[0].top_logprobs) == 3
    assert content[0].logprob <= 0


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _post(path, body):
    root = BASE_URL.rsplit("/v1", 1)[0]
    req = urllib.request.Request(root + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def test_tools_round_trip(client):
    """A tool call and its result, as the `openai` client sends them back, reach the model.

    Qwen2.5-Coder-0.5B does not emit Hermes `<tool_call>` tags (it answers with bare JSON), so
    a tool call cannot be produced here; the parsing of model output into tool calls is tested
    in `kestrel-server` (`chat::tests`, the tool-call parser's property tests and the fuzzer).
    What this test checks is the other half: the client's assistant message with `tool_calls`
    (arguments as a JSON string) and the tool result are rendered into the prompt as the
    template expects, and the conversation generates.
    """
    tools = [WEATHER_TOOL]
    assistant = openai.types.chat.ChatCompletionMessage(
        role="assistant",
        content=None,
        tool_calls=[
            {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
        ],
    )
    messages = [
        {"role": "user", "content": "What is the weather in Paris? Use the get_weather tool."},
        assistant.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": "call_abc", "content": "18 C and sunny"},
    ]
    rendered = _post("/detokenize", {"tokens": _post("/tokenize", {"messages": messages, "tools": tools})["tokens"]})["prompt"]
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' in rendered, rendered
    assert "<tool_response>\n18 C and sunny\n</tool_response>" in rendered, rendered
    assert '<tools>\n{"type": "function", "function": {"name": "get_weather"' in rendered, "the schema is in the system prompt"
    r = client.chat.completions.create(model=MODEL, messages=messages, tools=tools, max_tokens=16, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")
    assert r.choices[0].message.content or r.choices[0].message.tool_calls


def _tool_calls(message):
    """`(name, arguments as a dict)` of each tool call, which must be valid JSON."""
    return [(c.function.name, json.loads(c.function.arguments)) for c in message.tool_calls or []]


def test_tool_choice_required_and_named_force_valid_calls(client):
    time_tool = {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time in a time zone",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string", "enum": ["UTC", "CET", "PST"]}},
                "required": ["zone"],
                "additionalProperties": False,
            },
        },
    }
    messages = [{"role": "user", "content": "What is the weather in Paris, and what time is it in UTC?"}]
    r = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL, time_tool], tool_choice="required",
        parallel_tool_calls=False, max_tokens=64, temperature=0,
    )
    assert r.choices[0].finish_reason == "tool_calls", r
    calls = _tool_calls(r.choices[0].message)
    assert len(calls) == 1, calls
    name, args = calls[0]
    assert name in ("get_weather", "get_time")
    if name == "get_weather":
        assert isinstance(args["city"], str)
    else:
        assert args["zone"] in ("UTC", "CET", "PST")
    r = client.chat.completions.create(
        model=MODEL, messages=messages, tools=[WEATHER_TOOL, time_tool],
        tool_choice={"type": "function", "function": {"name": "get_time"}}, max_tokens=64, temperature=0,
    )
    calls = _tool_calls(r.choices[0].message)
    assert calls and all(n == "get_time" and a["zone"] in ("UTC", "CET", "PST") for n, a in calls), calls


# Structured output: the Pydantic models the `openai` SDK turns into strict JSON schemas
# (nested objects and `$ref`s, enums, arrays, optional fields as `anyOf` with null).
from enum import Enum  # noqa: E402
from typing import List, Optional  # noqa: E402

from pydantic import BaseModel, Field  # noqa: E402


class Unit(str, Enum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


# Length limits keep a 0.5B model's free text from running to `max_tokens` (the grammar holds
# them; without them it may ramble inside a string until cut).
class Place(BaseModel):
    city: str = Field(max_length=40)
    country: str = Field(max_length=40)


class Forecast(BaseModel):
    place: Place
    unit: Unit
    temperatures: List[int] = Field(max_length=7)
    summary: Optional[str] = Field(max_length=80)


PROMPTS = [
    "Paris", "Tokyo", "Oslo", "Cairo", "Lima", "Sydney", "Toronto", "Mumbai", "Nairobi", "Reykjavik",
    "Madrid", "Seoul", "Denver", "Hanoi", "Dublin", "Santiago", "Warsaw", "Manila", "Lagos", "Helsinki",
]


def test_parse_with_a_pydantic_model_for_20_prompts(client):
    for city in PROMPTS:
        r = client.chat.completions.parse(
            model=MODEL,
            messages=[{"role": "user", "content": f"Give a three-day weather forecast for {city} as JSON."}],
            response_format=Forecast,
            max_tokens=200,
            temperature=0,
        )
        forecast = r.choices[0].message.parsed
        assert isinstance(forecast, Forecast), r
        assert isinstance(forecast.place, Place) and isinstance(forecast.unit, Unit)


def test_streamed_json_schema_concatenates_to_valid_json(client):
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Rome as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "forecast", "schema": Forecast.model_json_schema(), "strict": True},
        },
        max_tokens=160,
        temperature=0,
        stream=True,
    )
    text, finish = "", None
    for chunk in stream:
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert finish == "stop"
    Forecast.model_validate_json(text)


def test_invalid_schema_is_a_400_naming_the_field(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], max_tokens=4,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "frobnicate"}}},
        )
    assert "response_format.json_schema.schema" in str(e.value)


def test_langchain_with_structured_output():
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model=MODEL, base_url=BASE_URL, api_key="EMPTY", temperature=0, max_tokens=160)
    for method in ("json_schema", "function_calling"):
        forecast = llm.with_structured_output(Forecast, method=method).invoke("Weather in Berlin as JSON.")
        assert isinstance(forecast, Forecast), (method, forecast)


def test_cache_salt_isolates_the_prefix_cache(client):
    prompt = "Summarize the history of the printing press in one paragraph. " * 8
    def cached(salt):
        r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=1, temperature=0, extra_body={"cache_salt": salt})
        return r.usage.prompt_tokens_details.cached_tokens
    cached("tenant-a")
    assert cached("tenant-a") > 0
    assert cached("tenant-b") == 0


def test_errors(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[], max_tokens=4)
    assert "messages" in str(e.value)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}], max_tokens=4)


def test_langchain_invoke_and_stream():
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model=MODEL,
        base_url=BASE_URL,
        api_key="EMPTY",
        temperature=0.5,
        streaming=True,
        max_tokens=32,
        extra_body={"enable_thinking": True, "return_reasoning": True},
    )
    answer = llm.invoke("你是谁？")
    print("invoke:", answer.content)
    assert answer.content
    pieces = []
    for chunk in llm.stream("你是谁？"):
        print(chunk.content, end="|", flush=True)
        pieces.append(chunk.content)
    print()
    assert "".join(pieces)


def _root():
    return BASE_URL.rsplit("/v1", 1)[0]


def test_tgi_text_generation_with_huggingface_hub():
    """`huggingface_hub`'s `InferenceClient` against the server's root, as against a TGI server."""
    from huggingface_hub import InferenceClient

    hf = InferenceClient(base_url=_root())
    prompt = "def fibonacci(n):"
    text = hf.text_generation(prompt, max_new_tokens=16)
    assert text
    # Streamed tokens add up to the non-streamed greedy answer.
    assert "".join(hf.text_generation(prompt, max_new_tokens=16, stream=True)) == text
    out = hf.text_generation(prompt, max_new_tokens=16, details=True)
    assert out.generated_text == text
    assert out.details.finish_reason in ("length", "eos_token", "stop_sequence")
    assert len(out.details.tokens) == out.details.generated_tokens
    events = list(hf.text_generation(prompt, max_new_tokens=16, details=True, stream=True))
    assert events[-1].generated_text == text
    assert events[-1].details.generated_tokens == out.details.generated_tokens
    assert all(e.generated_text is None for e in events[:-1])
    # Against the OpenAI route, the same greedy answer.
    r = openai.OpenAI(base_url=BASE_URL, api_key="EMPTY").completions.create(
        model=MODEL, prompt=prompt, max_tokens=16, temperature=0
    )
    assert r.choices[0].text == text


def test_tgi_validation_error_shape():
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import ValidationError

    hf = InferenceClient(base_url=_root())
    with pytest.raises(ValidationError) as e:
        hf.text_generation("x", max_new_tokens=4, top_k=0)
    assert "top_k" in str(e.value)
    req = urllib.request.Request(
        _root() + "/generate",
        data=json.dumps({"inputs": "x", "parameters": {"temperature": -1}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 422
    body = json.load(e.value)
    assert body["error_type"] == "validation" and "temperature" in body["error"]
    assert set(body) == {"error", "error_type"}
