#!/usr/bin/env python3
"""Golden renders of the Llama 3.2 and Phi-3.5 chat templates, made with Hugging Face
`transformers`' own renderer (`render_jinja_template`, what `apply_chat_template(...,
tokenize=False)` calls). Render text only: no tokenizer of these families is fetched.

The templates are llama.cpp's copies of the published files
(`vendor/llama.cpp/models/templates/` in the PyPI sdist `llama-cpp-python==0.3.36`):

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz
    python scripts/golden/make_family_template_goldens.py \
        --templates llama_cpp_python-0.3.36/vendor/llama.cpp/models/templates

Writes tests/fixtures/templates/{llama3.2,phi3.5}.json: {"template", "cases": [{"name",
"messages", "tools", "add_generation_prompt", "kwargs", "text"}]}, read by
crates/kestrel-text/tests/family_templates.rs. Needs transformers (>= 5) and jinja2.
"""

import argparse
import json
import os

import transformers
from transformers.utils.chat_template_utils import render_jinja_template

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(REPO_ROOT, "tests", "fixtures", "templates")

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
    },
}

# Pinned date: Llama 3.2's template prints today's date unless `date_string` is given.
DATE = {"date_string": "05 Dec 2026"}

CASES = [
    ("user only", [{"role": "user", "content": "Hello!"}], None, True, DATE),
    (
        "system and multi-turn",
        [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "What is 2+2?"},
            {"role": "assistant", "content": "4."},
            {"role": "user", "content": "And 3+3?"},
        ],
        None,
        True,
        DATE,
    ),
    (
        "no generation prompt",
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
        None,
        False,
        DATE,
    ),
    (
        "tools",
        [{"role": "user", "content": "Weather in Oslo?"}],
        [WEATHER],
        True,
        DATE,
    ),
]

FILES = {
    "llama3.2": ("meta-llama-Llama-3.2-3B-Instruct.jinja", {"bos_token": "<|begin_of_text|>",
                                                          "eos_token": "<|eot_id|>"}),
    "phi3.5": ("microsoft-Phi-3.5-mini-instruct.jinja", {"bos_token": "<s>",
                                                        "eos_token": "<|endoftext|>"}),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--templates", required=True, help="llama.cpp's models/templates folder")
    ap.add_argument("--out-dir", default=OUT)
    args = ap.parse_args()
    for name, (file, special) in FILES.items():
        with open(os.path.join(args.templates, file)) as f:
            template = f.read()
        cases = []
        for case_name, messages, tools, gen, kwargs in CASES:
            if tools and "tools" not in template:
                continue
            rendered, _ = render_jinja_template(
                conversations=[messages], tools=tools, chat_template=template,
                add_generation_prompt=gen, **special, **kwargs)
            cases.append({"name": case_name, "messages": messages, "tools": tools,
                          "add_generation_prompt": gen, "kwargs": {**special, **kwargs},
                          "text": rendered[0]})
        out = {"transformers_version": transformers.__version__, "source": file,
               "template": template, "cases": cases}
        with open(os.path.join(args.out_dir, f"{name}.json"), "w") as f:
            json.dump(out, f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(name, len(cases), "cases")


if __name__ == "__main__":
    main()
