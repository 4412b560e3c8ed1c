"""Container health check (the image's HEALTHCHECK, compose's healthchecks): GET
http://127.0.0.1:<port><path> and exit 0 on 200, 1 otherwise, printing the answer so that
`docker inspect` shows why (/readyz says which of broker, database or consumers is not fine).

    python /usr/local/bin/rapport-healthcheck [/readyz|/healthz] [port]
"""

from __future__ import annotations

import sys
import urllib.error
import urllib.request


def check(path: str = "/readyz", port: str = "8080", timeout: float = 4.0) -> tuple[bool, str]:
    url = f"http://127.0.0.1:{port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200, f"{response.status} {response.read(2000).decode(errors='replace')}"
    except urllib.error.HTTPError as error:
        return False, f"{error.code} {error.read(2000).decode(errors='replace')}"
    except OSError as error:
        return False, f"{url}: {error}"


def main(argv: list[str]) -> int:
    ok, answer = check(*argv[1:3])
    print(answer)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
