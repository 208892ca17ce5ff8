#!/usr/bin/env python3
"""Golden chat-template renders for kestrel-text, made with Hugging Face `transformers`.

For each conversation below, records what `tokenizer.apply_chat_template` gives:
the rendered prompt (tokenize=False) and its token ids (tokenize=True), or the error
it raises. The Rust tests (crates/kestrel-text/tests/template_goldens.rs) demand the
same bytes and the same ids.

Outputs (committed):
    tests/fixtures/templates/qwen3.json
        template:  chat_template of qwen3-tokenizer/tokenizer_config.json
        tokenizer: qwen3-tokenizer/ (tokenizer.json + tokenizer_config.json),
                   AutoTokenizer.from_pretrained(dir)
    tests/fixtures/templates/qwen2.5.json
        template:  `tokenizer.chat_template` of qwen2.5-coder-0.5b-instruct.gguf,
                   read with the `gguf` package
        tokenizer: the same GGUF's vocabulary, converted by transformers
                   (AutoTokenizer.from_pretrained(dir, gguf_file=...)); the Rust side
                   builds its tokenizer from the same GGUF metadata.

Inputs: the fixture directory of scripts/fetch-fixtures.sh
(${KESTREL_FIXTURES:-$HOME/.cache/kestrel/fixtures}).

Needs transformers (>= 5), jinja2 and gguf; no torch. Run with:
    /opt/ref/bin/python scripts/golden/make_template_goldens.py

Options (the defaults write the committed goldens above):
    --out-dir DIR     write qwen3.json and qwen2.5.json into DIR instead of
                      tests/fixtures/templates
    --cases FILE      take the conversations from FILE, a JSON list shaped like CASES
                      below ({"name", "messages", and optionally "tools",
                      "add_generation_prompt", "chat_template_kwargs"}), instead of
                      the built-in list. The Rust test reads such a directory when
                      KESTREL_TEMPLATE_GOLDENS names it.
"""

import argparse

import hashlib
import json
import os
import sys
from pathlib import Path

import gguf
import jinja2
import transformers
from transformers import AutoTokenizer

REPO = Path(__file__).resolve().parents[2]
OUT_DIR = REPO / "tests" / "fixtures" / "templates"
FIXTURES = Path(os.environ.get("KESTREL_FIXTURES") or Path.home() / ".cache" / "kestrel" / "fixtures")
QWEN3_DIR = FIXTURES / "qwen3-tokenizer"
GGUF_NAME = "qwen2.5-coder-0.5b-instruct.gguf"

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": 'Get the current weather in a city.\nReturns "temperature" in °C.',
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "City name, e.g. 東京 or Zürich"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "max_results": {"type": "integer", "minimum": 1, "maximum": 10, "default": 5},
                    "threshold": {"type": "number", "default": 0.5},
                    "filters": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["query"],
            },
        },
    },
]


def call(call_id, name, arguments):
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


WEATHER_PARIS = call("call_1", "get_weather", {"city": "Paris", "unit": "celsius"})

REASONING_HISTORY = [
    {"role": "user", "content": "What is 17*23?"},
    {
        "role": "assistant",
        "content": "17 × 23 = 391.",
        "reasoning_content": "17*23 = 17*20 + 17*3 = 340 + 51 = 391.",
    },
    {"role": "user", "content": "Divide it by 17."},
]

CASES = [
    {"name": "user_only", "messages": [{"role": "user", "content": "Hello! Who are you?"}]},
    {
        "name": "system_and_user",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is 2+2?"},
        ],
    },
    {
        "name": "multi_turn",
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4"},
            {"role": "user", "content": "And 3+3?"},
        ],
    },
    {"name": "history_reasoning_content", "messages": REASONING_HISTORY},
    {
        "name": "history_reasoning_thinking_off",
        "messages": REASONING_HISTORY,
        "chat_template_kwargs": {"enable_thinking": False},
    },
    {
        "name": "history_reasoning_field_alias",
        "messages": [
            {"role": "user", "content": "Name a prime."},
            {"role": "assistant", "content": "7", "reasoning": "Small primes: 2, 3, 5, 7."},
            {"role": "user", "content": "Another one?"},
            {"role": "assistant", "content": "11", "reasoning": "Next: 11.", "reasoning_content": None},
        ],
        "add_generation_prompt": False,
    },
    {
        "name": "history_think_tags_in_content",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "<think>\nThe user greets me.\n</think>\n\nHi there! How can I help?"},
            {"role": "user", "content": "Tell me a joke."},
        ],
    },
    {
        "name": "last_assistant_reasoning_no_generation_prompt",
        "messages": [
            {"role": "user", "content": "Is 91 prime?"},
            {"role": "assistant", "content": "No: 91 = 7 × 13.", "reasoning_content": "\nTry 7: 7*13 = 91.\n"},
        ],
        "add_generation_prompt": False,
    },
    {
        "name": "enable_thinking_false",
        "messages": [{"role": "user", "content": "Write a haiku about rust."}],
        "chat_template_kwargs": {"enable_thinking": False},
    },
    {
        "name": "enable_thinking_true_extra_kwargs",
        "messages": [{"role": "user", "content": "Write a haiku about rust."}],
        "chat_template_kwargs": {"enable_thinking": True, "custom_flag": "ignored"},
    },
    {
        "name": "no_generation_prompt",
        "messages": [
            {"role": "user", "content": "Say hi."},
            {"role": "assistant", "content": "Hi!"},
        ],
        "add_generation_prompt": False,
    },
    {
        "name": "tools_without_system",
        "messages": [{"role": "user", "content": "What's the weather in Paris?"}],
        "tools": TOOLS,
    },
    {
        "name": "tools_with_system",
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "What's the weather in Paris?"},
        ],
        "tools": TOOLS,
    },
    {
        "name": "tool_call_dict_arguments_one_result",
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [WEATHER_PARIS]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21.5, "sky": "clear"}'},
        ],
        "tools": TOOLS,
    },
    {
        "name": "tool_call_null_content",
        "messages": [
            {"role": "user", "content": "What's the weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [WEATHER_PARIS]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 21.5}'},
        ],
        "tools": TOOLS,
    },
    {
        "name": "parallel_tool_calls_string_arguments_several_results",
        "messages": [
            {"role": "system", "content": "Use tools when useful."},
            {"role": "user", "content": "Weather in Oslo and Lima, and search for umbrellas."},
            {
                "role": "assistant",
                "content": "I'll check both cities.",
                "tool_calls": [
                    call("call_a", "get_weather", '{"city": "Oslo"}'),
                    call("call_b", "get_weather", '{"city": "Lima", "unit": "fahrenheit"}'),
                    call("call_c", "search", '{"query": "umbrellas", "max_results": 3}'),
                ],
            },
            {"role": "tool", "tool_call_id": "call_a", "content": '{"temperature": -3}'},
            {"role": "tool", "tool_call_id": "call_b", "content": '{"temperature": 68}'},
            {"role": "tool", "tool_call_id": "call_c", "content": "1. Big umbrella\n2. Small umbrella"},
            {"role": "assistant", "content": "Oslo: -3 °C. Lima: 68 °F. Umbrellas found."},
            {"role": "user", "content": "Thanks!"},
        ],
        "tools": TOOLS,
    },
    {
        "name": "multi_step_tool_calls_with_reasoning",
        "messages": [
            {"role": "user", "content": "Is it warmer in Rome than in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "reasoning_content": "I need both temperatures. Start with Rome.",
                "tool_calls": [call("call_r", "get_weather", {"city": "Rome"})],
            },
            {"role": "tool", "tool_call_id": "call_r", "content": '{"temperature": 24}'},
            {
                "role": "assistant",
                "content": "Now Paris.",
                "reasoning_content": "Rome is 24. Now Paris.",
                "tool_calls": [WEATHER_PARIS],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temperature": 18}'},
        ],
        "tools": TOOLS,
        "chat_template_kwargs": {"enable_thinking": True},
    },
    {
        "name": "tool_arguments_json_values",
        "messages": [
            {"role": "user", "content": "Search with odd values."},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    call(
                        "call_x",
                        "search",
                        {
                            "query": 'say "hi"\n\tthen \\ leave — café 🦀',
                            "max_results": 10,
                            "threshold": 0.5,
                            "tiny": 1e-07,
                            "whole_float": 2.0,
                            "huge": 1e20,
                            "negative": -42,
                            "flags": [True, False, None],
                            "nested": {"b": [], "a": {}},
                        },
                    )
                ],
            },
            {"role": "tool", "tool_call_id": "call_x", "content": "[]"},
        ],
        "tools": TOOLS,
    },
    {
        "name": "cjk_and_emoji",
        "messages": [
            {"role": "system", "content": "你是一个乐于助人的助手。🤖"},
            {"role": "user", "content": "你好！今天天气怎么样？☀️🌧️"},
            {"role": "assistant", "content": "今天是晴天 😊 気温は25度です。한국어도 돼요."},
            {"role": "user", "content": "谢谢 👍🏽 👨‍👩‍👧 ﾃｽﾄ"},
        ],
    },
    {
        "name": "system_message_not_first",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "system", "content": "Answer in French."},
            {"role": "user", "content": "How are you?"},
        ],
    },
    {
        "name": "user_message_looks_like_tool_response",
        "messages": [
            {"role": "user", "content": "Question one"},
            {"role": "assistant", "content": "Answer one", "reasoning_content": "thinking one"},
            {"role": "user", "content": "<tool_response>\nnot a real tool\n</tool_response>"},
        ],
    },
    {
        "name": "special_tokens_in_user_text",
        "messages": [{"role": "user", "content": "Literal <|im_start|> and <think> and <tool_call> in text."}],
    },
]


def render_case(tokenizer, template, case):
    kwargs = dict(case.get("chat_template_kwargs") or {})
    common = dict(
        tools=case.get("tools"),
        add_generation_prompt=case.get("add_generation_prompt", True),
        chat_template=template,
        **kwargs,
    )
    record = {
        "name": case["name"],
        "messages": case["messages"],
        "tools": case.get("tools"),
        "add_generation_prompt": case.get("add_generation_prompt", True),
        "chat_template_kwargs": kwargs,
    }
    try:
        rendered = tokenizer.apply_chat_template(case["messages"], tokenize=False, **common)
    except Exception as err:  # the template rejects the conversation: record that
        record["error"] = f"{type(err).__name__}: {err}"
        return record
    ids = tokenizer.apply_chat_template(case["messages"], tokenize=True, **common)
    if not isinstance(ids, list):
        ids = ids["input_ids"]
    assert ids == tokenizer.encode(rendered, add_special_tokens=False), case["name"]
    record["rendered"] = rendered
    record["token_ids"] = ids
    return record


def write(name, tokenizer, template, template_source, tokenizer_source, cases, out_dir):
    cases = [render_case(tokenizer, template, case) for case in cases]
    doc = {
        "generator": "scripts/golden/make_template_goldens.py",
        "transformers_version": transformers.__version__,
        "jinja2_version": jinja2.__version__,
        "template_source": template_source,
        "tokenizer_source": tokenizer_source,
        "chat_template_sha256": hashlib.sha256(template.encode("utf-8")).hexdigest(),
        "chat_template": template,
        "cases": cases,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")
    errors = [c["name"] for c in cases if "error" in c]
    print(f"wrote {path}: {len(cases)} cases, errors in {errors}", file=sys.stderr)


def gguf_chat_template(path):
    reader = gguf.GGUFReader(path)
    field = reader.fields["tokenizer.chat_template"]
    return field.contents()


def load_cases(path):
    with open(path, encoding="utf-8") as f:
        cases = json.load(f)
    if not isinstance(cases, list) or not cases:
        sys.exit(f"{path}: expected a non-empty JSON list of cases")
    names = set()
    for i, case in enumerate(cases):
        if not isinstance(case, dict) or not isinstance(case.get("name"), str):
            sys.exit(f"{path}: case {i} is not an object with a string \"name\"")
        if not isinstance(case.get("messages"), list):
            sys.exit(f"{path}: case {case['name']!r} has no \"messages\" list")
        if case["name"] in names:
            sys.exit(f"{path}: duplicate case name {case['name']!r}")
        names.add(case["name"])
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help=f"default: {OUT_DIR}")
    parser.add_argument("--cases", type=Path, help="JSON list of conversations (default: the built-in CASES)")
    args = parser.parse_args()
    cases = load_cases(args.cases) if args.cases else CASES

    for needed in (QWEN3_DIR / "tokenizer.json", QWEN3_DIR / "tokenizer_config.json", FIXTURES / GGUF_NAME):
        if not needed.exists():
            sys.exit(f"missing {needed}: run scripts/fetch-fixtures.sh first")

    qwen3 = AutoTokenizer.from_pretrained(QWEN3_DIR)
    write(
        "qwen3.json",
        qwen3,
        qwen3.chat_template,
        "qwen3-tokenizer/tokenizer_config.json: chat_template",
        "qwen3-tokenizer/ via transformers AutoTokenizer.from_pretrained(dir)",
        cases,
        args.out_dir,
    )

    template = gguf_chat_template(FIXTURES / GGUF_NAME)
    qwen25 = AutoTokenizer.from_pretrained(FIXTURES, gguf_file=GGUF_NAME)
    if qwen25.chat_template is not None and qwen25.chat_template != template:
        sys.exit("transformers read a different chat template from the GGUF than the gguf package")
    write(
        "qwen2.5.json",
        qwen25,
        template,
        f"{GGUF_NAME}: tokenizer.chat_template (gguf package)",
        f"{GGUF_NAME} vocabulary via transformers AutoTokenizer.from_pretrained(dir, gguf_file=...)",
        cases,
        args.out_dir,
    )


if __name__ == "__main__":
    main()
