"""The ``roleprobe`` command line: a thin layer that parses arguments and calls the library.

Subcommands:
    ``roleprobe chat "PROMPT"``: answer one prompt with a model (the set-up smoke test).
    ``roleprobe info``: a model's layers, hook names, post-instruction tokens, letter ids.
    ``roleprobe models``: what :func:`roleprobe.load_model` can load here.

Errors print one line (``roleprobe: error: ...``) and exit with status 2; ``--debug`` shows
the traceback instead.
"""

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence

from roleprobe import __version__

logger = logging.getLogger("roleprobe")


def _out(text: str) -> None:
    sys.stdout.write(text + "\n")


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="smollm2-135m-instruct", help="model name (see `roleprobe models`)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16, float64")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="roleprobe", description="Role vectors in a language model's residual stream."
    )
    parser.add_argument("--version", action="version", version=f"roleprobe {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--quiet", action="store_true", help="only warnings and results")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    chat = sub.add_parser("chat", help="answer one prompt in the model's chat template")
    chat.add_argument("prompt", help="the user turn")
    chat.add_argument("--max-new-tokens", type=int, default=64)
    chat.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    chat.add_argument("--seed", type=int, default=None)
    _add_model_args(chat)

    info = sub.add_parser("info", help="a model's layers, hook names and template tokens")
    info.add_argument("--json", action="store_true", help="print JSON")
    _add_model_args(info)

    sub.add_parser("models", help="models that can be loaded here")
    return parser


def _cmd_chat(args: argparse.Namespace) -> None:
    from roleprobe.generation import generate
    from roleprobe.models import load_model

    start = time.perf_counter()
    model = load_model(args.model, device=args.device, dtype=args.dtype)
    logger.info("loaded %s in %.1fs", args.model, time.perf_counter() - start)
    (text,) = generate(
        model,
        [args.prompt],
        max_new_tokens=args.max_new_tokens,
        do_sample=args.sample,
        seed=args.seed,
    )
    _out(text)


def _cmd_info(args: argparse.Namespace) -> None:
    from roleprobe.chat import ChatTemplate, answer_letter_ids
    from roleprobe.models import load_model

    model = load_model(args.model, device=args.device, dtype=args.dtype)
    tokenizer = model.tokenizer
    template = ChatTemplate.from_tokenizer(tokenizer)
    letters = answer_letter_ids(tokenizer)
    n_layers = model.cfg.n_layers
    info = {
        "model": args.model,
        "n_layers": n_layers,
        "d_model": model.cfg.d_model,
        "n_ctx": model.cfg.n_ctx,
        "device": str(model.cfg.device),
        "dtype": str(model.cfg.dtype),
        "hook_points": [
            f"blocks.{{0..{n_layers - 1}}}.{name}"
            for name in ("hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post")
        ],
        "post_instruction_ids": list(template.suffix_ids),
        "post_instruction_tokens": template.post_instruction_tokens(tokenizer),
        "answer_letter_ids": dict(zip("ABCD", letters, strict=True)),
    }
    if args.json:
        _out(json.dumps(info, indent=1))
        return
    for key, value in info.items():
        _out(f"{key:24} {value!r}" if "tokens" in key else f"{key:24} {value}")


def _cmd_models(args: argparse.Namespace) -> None:
    from roleprobe.models import available_models

    for entry in available_models():
        status = "offline" if entry.offline else "needs download"
        _out(f"{entry.name:24} {status:15} {entry.source:30} {entry.note}")


_COMMANDS = {"chat": _cmd_chat, "info": _cmd_info, "models": _cmd_models}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        sys.stderr.write("roleprobe: interrupted\n")
        return 130
    except Exception as err:
        if args.debug:
            raise
        sys.stderr.write(f"roleprobe: error: {err}\n")
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
