"""The same chat program against a running `arborlm serve`, through `al.RuntimeEndpoint`.

    arborlm serve --port 30000 &
    python examples/chat_server_client.py --url http://127.0.0.1:30000
"""

from __future__ import annotations

import argparse

import arborlm as al


@al.program
def multi_turn(s, first, second):
    s += al.system("You are a concise assistant.")
    s += al.user(first)
    s += al.assistant(al.gen("a1", max_tokens=32, stop="\n"))
    s += al.user(second)
    s += al.assistant(al.gen("a2", max_tokens=32, stop="\n"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", default="http://127.0.0.1:30000")
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()
    al.set_default_backend(al.RuntimeEndpoint(args.url, api_key=args.api_key))
    state = multi_turn.run(first="Name a fruit.", second="What color is it?", temperature=0)
    for m in state.messages():
        print(f"{m['role']}: {m['content']}")
    stream = multi_turn.run(first="Name a planet.", second="Is it large?", temperature=0, stream=True)
    print("streamed:", "".join(stream.text_iter("a2")))
    print("meta:", state.meta())


if __name__ == "__main__":
    main()
