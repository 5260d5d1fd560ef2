"""Roles: the messages of a state and the text their chat template renders.

The text the model sees is what `/v1/chat/completions` would send for the same messages: an
opened role adds the template's text up to where that message's content goes (for `assistant`,
exactly `render(messages, add_generation_prompt=True)`), and a closed role adds the rest of
`render(messages)`. The template must render a growing conversation as a growing text (every
common chat template does); if it does not, we raise rather than send a different text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from arborlm.backends.base import ChatTemplate

SENTINEL = "\x1e\x1dARBORLM_CONTENT\x1d\x1e"


class RoleError(ValueError):
    """A role used where the conversation does not allow it (nested roles, an unknown role)."""


@dataclass
class RoleTracker:
    messages: list[dict[str, str]] = field(default_factory=list)
    open_role: str | None = None
    content_start: int = 0  # text offset where the open role's content begins
    chat_start: int | None = None  # text offset where the chat (the first role) begins

    def copy(self) -> RoleTracker:
        return RoleTracker([dict(m) for m in self.messages], self.open_role, self.content_start, self.chat_start)

    def _piece(self, text: str, rendered: str) -> str:
        assert self.chat_start is not None
        so_far = text[self.chat_start:]
        if not rendered.startswith(so_far):
            raise RoleError("the chat template does not render this conversation as a growing text "
                            "(text was added outside a role after the chat began?)")
        return rendered[len(so_far):]

    def begin(self, role: str, text: str, template: ChatTemplate) -> str:
        """Text to append when `role` opens."""
        if self.open_role is not None:
            raise RoleError(f"roles cannot nest: {role!r} opened inside {self.open_role!r}")
        if self.chat_start is None:
            self.chat_start = len(text)
        if role == "assistant" and self.messages:
            head = template.render(self.messages, add_generation_prompt=True)
        else:
            rendered = template.render([*self.messages, {"role": role, "content": SENTINEL}])
            cut = rendered.find(SENTINEL)
            if cut < 0:
                raise RoleError(f"the chat template dropped the content of a {role!r} message")
            head = rendered[:cut]
        piece = self._piece(text, head)
        self.open_role = role
        self.content_start = len(text) + len(piece)
        return piece

    def end(self, role: str, text: str, template: ChatTemplate) -> str:
        """Text to append when `role` closes."""
        if self.open_role != role:
            raise RoleError(f"closing role {role!r} but the open role is {self.open_role!r}")
        self.messages.append({"role": role, "content": text[self.content_start:]})
        self.open_role = None
        return self._piece(text, template.render(self.messages))

    def current(self, text: str) -> list[dict[str, str]]:
        msgs = [dict(m) for m in self.messages]
        if self.open_role is not None:
            msgs.append({"role": self.open_role, "content": text[self.content_start:]})
        return msgs
