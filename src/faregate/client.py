"""`faregate chat`: a tiny stdlib client for trying a running gateway."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request


def _request(url: str, api_key: str | None, body: dict | None = None) -> urllib.request.Request:
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    data = json.dumps(body).encode() if body is not None else None
    return urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")


def chat(prompt: str, *, model: str | None, stream: bool, base_url: str, api_key: str | None, max_tokens: int) -> int:
    base = base_url.rstrip("/")
    try:
        if model is None:
            with urllib.request.urlopen(_request(f"{base}/v1/models", api_key), timeout=30) as resp:
                models = json.load(resp)["data"]
            if not models:
                print("The gateway serves no models.", file=sys.stderr)
                return 1
            model = models[0]["id"]
        body = {"model": model, "messages": [{"role": "user", "content": prompt}],
                "max_tokens": max_tokens, "stream": stream}
        with urllib.request.urlopen(_request(f"{base}/v1/chat/completions", api_key, body), timeout=600) as resp:
            if not stream:
                print(json.load(resp)["choices"][0]["message"]["content"])
                return 0
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    print(f"\nerror: {chunk['error'].get('message')}", file=sys.stderr)
                    return 1
                for choice in chunk.get("choices", []):
                    print(choice.get("delta", {}).get("content") or "", end="", flush=True)
            print()
            return 0
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc)["error"]["message"]
        except Exception:
            message = exc.reason
        print(f"error {exc.code}: {message}", file=sys.stderr)
        return 1
    except urllib.error.URLError as exc:
        print(f"cannot reach {base}: {exc.reason}", file=sys.stderr)
        return 1
