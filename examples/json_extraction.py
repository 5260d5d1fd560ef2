"""JSON extraction with a Pydantic schema: the output is constrained to the schema and
`state.parsed(name)` returns the validated object.

    python examples/json_extraction.py
"""

from __future__ import annotations

from pydantic import BaseModel, Field

import arborlm as al


class Person(BaseModel):
    name: str = Field(max_length=30)
    age: int = Field(ge=0, le=130)
    city: str = Field(max_length=30)


@al.program
def extract(s, text):
    s += al.system("Extract the person described in the text as JSON.")
    s += al.user(text)
    s += al.assistant(al.gen("person", json_schema=Person, max_tokens=48))


def main() -> None:
    al.set_default_backend(al.Engine(model="smollm2"))
    texts = ["Maria is 34 years old and lives in Lisbon.", "Tom, aged 27, moved to Oslo last year."]
    for st in extract.run_batch([{"text": t} for t in texts], temperature=0):
        person = st.parsed("person")
        print(type(person).__name__, person.model_dump())


if __name__ == "__main__":
    main()
