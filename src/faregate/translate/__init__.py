"""Pure translations between the canonical schema (OpenAI Chat Completions dicts) and Anthropic's
Messages API, in both directions: no I/O, plain dict manipulation on the hot path.

- `anthropic_request`: `messages_request_to_chat` (front end) and `chat_request_to_messages`
  (upstream provider);
- `anthropic_response`: `chat_response_to_messages` and `messages_response_to_chat`;
- `anthropic_stream`: `ChatStreamToMessages` (canonical chunks → Anthropic events) and
  `MessagesStreamToChat` (Anthropic events → canonical chunks);
- `anthropic_blocks`: content part ⇄ content block helpers; `anthropic_common`: stop reasons,
  usage and ids shared by the above.
"""
