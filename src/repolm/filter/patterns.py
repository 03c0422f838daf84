"""The pattern table behind `repolm.filter.secrets`: precise credential formats, key-value syntax,
and the placeholder and reference shapes that are never secrets.

Token formats follow detect-secrets' plugins (`detect_secrets/plugins/*.py`), tightened to exact
spans (word boundaries, no trailing context) and extended with formats it lacks (Anthropic,
Hugging Face, PyPI macaroons of any length, new GitHub/OpenAI/Stripe shapes). Every pattern starts
with a literal or a small character class, so that `re` can skip quickly to candidate positions.

One table, kept in one file on purpose (over 400 lines): the formats, the words and the shapes
that are never secrets are read together when a rule is tuned, and nothing here is code.
"""

from __future__ import annotations

import re
from typing import NamedTuple


class TokenPattern(NamedTuple):
    """A credential format found anywhere in (UTF-8 encoded) text. `group` is the secret's span
    (0: the whole match); `boundary`: the match must not follow a word character. The check is
    made in code, not with a leading `\\b`, which would stop `re` from searching for the
    pattern's literal prefix (50x slower)."""

    type: str
    regex: re.Pattern[bytes]
    group: int = 0
    boundary: bool = True


def _p(type_: str, pattern: str, group: int = 0, boundary: bool = True) -> TokenPattern:
    return TokenPattern(type_, re.compile(pattern.encode()), group, boundary)


_END = r"(?![\w-])"  # a token ends where word characters and dashes stop

TOKEN_PATTERNS: tuple[TokenPattern, ...] = (
    _p("aws_access_key", r"A(?:KIA|SIA|BIA|CCA|3T[A-Z0-9])[A-Z0-9]{16}\b"),
    # detect-secrets' AWS secret rule: "aws", a secret-ish word, then 40 base64 characters.
    *(
        _p(
            "aws_secret_key",
            prefix + r"[\w.\-]{0,20}?(?:secret|SECRET|Secret|key|KEY|Key|pass|PASS|Pass|token"
            r"|TOKEN|Token)[\w.\-\"'\]]{0,20}?[ \t]*(?:[=:,(]|=>|:=)[ \t]*[\"']?"
            r"([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
            1,
            boundary=False,
        )
        for prefix in ("aws", "AWS", "Aws")
    ),
    _p("github_token", r"gh[pousr]_[A-Za-z0-9]{36,255}\b"),
    _p("github_token", r"github_pat_[A-Za-z0-9_]{22,255}\b"),
    _p(
        "gitlab_token",
        r"gl(?:pat|dt|ft|soat|rt|cbt|imt|ptt|agent|oas|ffct|sa)-[A-Za-z0-9_\-]{20,1024}" + _END,
    ),
    _p("gitlab_token", r"GR1348941[A-Za-z0-9_\-]{20,50}" + _END),
    _p("slack_webhook", r"https?://hooks\.slack\.com/(?:services|workflows|triggers)/[\w/]{20,}"),
    _p("slack_token", r"xox[abposr]-[A-Za-z0-9\-]{10,250}" + _END),
    _p("slack_token", r"xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+\b"),
    _p(
        "discord_webhook",
        r"https?://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/api/(?:v\d+/)?webhooks/\d+/"
        r"[A-Za-z0-9_\-]+",
    ),
    _p("stripe_key", r"sk_(?:live|test)_[0-9A-Za-z]{10,247}\b"),
    _p("stripe_key", r"rk_(?:live|test)_[0-9A-Za-z]{10,247}\b"),
    _p("stripe_key", r"whsec_[A-Za-z0-9]{24,}\b"),
    _p("google_api_key", r"AIza[0-9A-Za-z_\-]{35}" + _END),
    _p("google_oauth_secret", r"GOCSPX-[A-Za-z0-9_\-]{28}" + _END),
    # Both start with "sk-": OpenAI's pattern skips Anthropic's prefix.
    _p("anthropic_key", r"sk-ant-[a-z]{2,8}\d{0,3}-[A-Za-z0-9_\-]{32,}" + _END),
    _p(
        "openai_key",
        r"sk-(?!ant-)(?:[A-Za-z0-9_\-]{0,40}T3BlbkFJ[A-Za-z0-9_\-]{16,}"
        r"|(?:proj|svcacct|admin)-[A-Za-z0-9_\-]{40,})" + _END,
    ),
    _p("huggingface_token", r"hf_[A-Za-z0-9]{34,40}\b"),
    _p("huggingface_token", r"api_org_[A-Za-z0-9]{34}\b"),
    _p("npm_token", r"npm_[A-Za-z0-9]{36}\b"),
    _p("npm_token", r":_authToken[ \t]*=[ \t]*[\"']?([^\s\"'$<{][^\s\"']{7,})", 1, False),
    _p("pypi_token", r"pypi-AgE(?:IcHlwaS5vcmc|NdGVzdC5weXBpLm9yZw)[A-Za-z0-9_\-]{50,}"),
    _p("twilio_key", r"AC[0-9a-f]{32}\b"),
    _p("twilio_key", r"SK[0-9a-f]{32}\b"),
    _p("sendgrid_key", r"SG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}" + _END),
    _p("azure_storage_key", r"AccountKey=([A-Za-z0-9+/]{86}==)", 1, False),
    # JSON header and payload both start with '{"' (eyJ); the signature may be empty (alg none).
    _p("jwt", r"eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]*" + _END),
    *(
        _p(
            "bearer_token",
            prefix + r"[\"']?[ \t]*[:=,][ \t]*[\"']?"
            r"(?:[Bb]earer|BEARER|[Bb]asic|BASIC|[Tt]oken|Bot|[Aa]pi[Kk]ey)[ \t]+"
            r"([A-Za-z0-9._~+/\-]{12,}=*)",
            1,
            boundary=False,
        )
        for prefix in ("Authorization", "authorization", "AUTHORIZATION")
    ),
    # scheme://user:password@host: the password only; user may be empty (redis://:pw@host).
    _p(
        "basic_auth_url",
        r"://[^\s:/@'\"<>{}]{0,256}:([^\s/@'\"<>{}]{1,256})@(?=[\w.\-\[])",
        1,
        boundary=False,
    ),
    _p("crypto_private_key", r"xprv[1-9A-HJ-NP-Za-km-z]{100,112}\b"),
    _p("crypto_private_key", r"tprv[1-9A-HJ-NP-Za-km-z]{100,112}\b"),
)

# PEM blocks: BEGIN ... END with only key-body characters between (base64, headers, diff
# prefixes, "\n" escapes and string quotes of a key pasted into code). A body with other
# characters is code that mentions the markers, not a key.
PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{0,40})PRIVATE KEY( BLOCK)?-----")
PEM_BODY_TO_END = re.compile(
    rb"[A-Za-z0-9+/=\s:,.\-\\\"'|]{0,100000}?-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
)
_B64_LINE = r"[ \t]*[\"']?(?:[A-Za-z0-9+/=]{16,}|[A-Za-z0-9+/]{1,15}={0,2})[\"']?[ \t]*"
_SEP = r"(?:\\n|\r?\n[+\- ]?)"
# A block cut short (a diff hunk that ends inside it): the marker, headers, base64 lines.
PEM_TRUNCATED_BODY = re.compile(
    (
        rf"(?:{_SEP}[ \t]*[A-Za-z\-]{{2,20}}: [^\n]*)*(?:{_SEP}[ \t]*(?={_SEP}))*"
        rf"(?:{_SEP}{_B64_LINE})+"
    ).encode()
)
PUTTY_START = re.compile(rb"PuTTY-User-Key-File-\d:")  # PUTTY_KEY's first line
PUTTY_KEY = re.compile(
    rb"PuTTY-User-Key-File-\d:[^\n]*(?:\n[^\n]*){0,80}?\n[+\- ]?Private-(?:MAC|Hash): [0-9a-fA-F]+"
)

# Bitcoin WIF private keys (base58check, validated in code): 5 (uncompressed), K/L (compressed).
# One regex per first character: a literal prefix is what makes `re` search fast.
WIF_CANDIDATES = tuple(
    re.compile(rb"%s[1-9A-HJ-NP-Za-km-z]{50,51}\b" % c) for c in (b"5", b"K", b"L")
)
BASE58_CHARS = frozenset(b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz")
BASE58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"

# Lines that may assign a credential: a key-ish word, then (soon) an assignment, a comparison
# or an XML tag's end. Searched in the lower-cased text, one literal-prefixed regex per word
# (an alternation is 20x slower); the line around each hit is then parsed with ASSIGNMENT.
# Each word costs one pass over the text (~25 ms per 40 MB), so the list is short: words like
# "hmac", "salt" or "cookie" reach the entropy check through "key"/"secret"/"token" names.
CANDIDATE_WORDS = (
    *("pass", "pwd", "secret", "token", "key", "cred", "auth(?!or)", "mnemonic", "seed"),
    *("sig", "session", "priv"),
)
# `::` is a path (Rust, C++), not an assignment; `>value</` is an XML element.
CANDIDATE_TAIL = r"[\w.\-]{0,40}[\"'\]]{0,2}[ \t]*(?:=>|[=!]|:(?!:)|>[^<>\n]{4,256}</)"
CANDIDATE_LINE = tuple(re.compile(w.encode() + CANDIDATE_TAIL.encode()) for w in CANDIDATE_WORDS)
# Command-line flags: --password VALUE / --api-key=VALUE.
_FLAG = (
    r"--[\w\-]*(?:pass(?:word|wd)?|token|secret|api-?key)\b[ =]"
    r"(?:\"([^\"\s]{4,})\"|'([^'\s]{4,})'|([^\s\"'\-$<{][^\s\"']{3,}))"
)
FLAG_ASSIGNMENT = re.compile(_FLAG, re.IGNORECASE)
FLAG_ASSIGNMENT_BYTES = re.compile(_FLAG.encode(), re.IGNORECASE)
# What is left of a PEM_BEGIN or FLAG_ASSIGNMENT match once its leading dashes are cut off with
# a line's indentation and diff marker (`secrets.line_content`): `-----BEGIN RSA PRIVATE KEY`,
# `--password x` on a removed line. The flag words run on lower-cased text.
PEM_BEGIN_TAIL = re.compile(rb"BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY")
FLAG_TAILS = tuple(
    re.compile(rb"%s\b[ =]" % word)
    for word in (rb"pass(?:word|wd)?", rb"token", rb"secret", rb"api-?key")
)
# XML/HTML elements: <password>VALUE</password>.
XML_ELEMENT = re.compile(
    r"<([\w:\-]*(?:password|passwd|secret|token|api[_\-]?key)[\w:\-]*)>([^<>\n]{4,256})</\1>",
    re.IGNORECASE,
)

# `key op value` in any of the syntaxes we scrub: code (=, :=, ==, =>, kwargs, type-annotated
# Rust/TS/Python constants), config (YAML/TOML/INI/.env/JSON, connection strings `Password=x;`).
# A key right after a path segment's "/" (`one/pass:word`, `https://host/a/pass:word`) is part of
# a path; after "//" (a comment) or a lone "/" (`cmdkey /pass:x`) it is a key.
ASSIGNMENT = re.compile(
    r"""
    (?<![\w.<$])(?<![^/\s]/)(?P<key>[A-Za-z_][\w.\-]{0,80})(?P<close>["'\]]{0,2})[ \t]*
    (?::[ \t]*(?P<ann>&?(?:'\w+[ \t]+)?[\w:<>\[\]\.,& ]{1,40}?)[ \t]*(?==))?
    (?P<op>:=|=>|===?|!==?|=|:)[ \t]*@?(?:[brfuBRFU]{1,2}(?=["']))?
    (?:"(?P<dq>[^"\\\n]*(?:\\.[^"\\\n]*)*)"
      |'(?P<sq>[^'\\\n]*(?:\\.[^'\\\n]*)*)'
      |`(?P<bq>[^`\n]*)`
      |(?P<uq>[^\s"'`,;)}\]]+))
    """,
    re.VERBOSE,
)

# A URL query parameter (`?user=bob&password=x`): ASSIGNMENT reads `bob&password=x` as the value
# of `user`, so a credential key after `?` or `&` is matched on its own; the value ends at the
# next parameter.
QUERY_PARAM = re.compile(r"[?&](?P<key>[A-Za-z_][\w.\-]{0,40})=(?P<value>[^&#\s\"'<>]+)")

# A key alone on its line, its value on the next: YAML `password:` (or `secret: |`, a block
# scalar), INI `password =` (a continuation line), JSON `"password":`. Matched against the line
# without a diff's leading +/-; `lead` is the key's column.
KEY_ALONE = re.compile(
    r"""(?P<lead>[ \t]*(?:-[ \t]+)?)(?P<q>["']?)(?P<key>[A-Za-z_][\w.\-]{0,80})(?P=q)[ \t]*
    (?:(?P<colon>:)[ \t]*(?:[|>][+\-1-9]{0,2}[ \t]*)?|(?P<equals>=)[ \t]*)\r?""",
    re.VERBOSE,
)
# The value line below it: a quoted string, or one plain word that starts no YAML structure
# (a sequence, a mapping, a flow collection, an anchor, a tag, a comment). No control
# characters: the scrubber's batch separator is never a value.
VALUE_BELOW = re.compile(
    r"""(?P<indent>[ \t]*)
    (?:"(?P<dq>[^"\\\n]*(?:\\.[^"\\\n]*)*)"[ \t]*,?
      |'(?P<sq>[^'\n]*)'[ \t]*,?
      |(?P<uq>[^\x00-\x20"'#\-\[\]{}&*!|>%@`?,:](?:[^\x00-\x20]*[^\x00-\x20,])?)[ \t]*,?)
    [ \t]*\r?""",
    re.VERBOSE,
)

KEY_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")

# A key (split into lower-case words) is a credential key when its last word, after qualifiers
# like `_default` or `_prod` are dropped, is one of these.
CREDENTIAL_WORD = re.compile(
    r"[a-z]*(?:password|passwd|passphrase|pwd|secret|token|apikey|credentials?|privkey|authkey"
    r"|accesskey|secretkey|privatekey|signingkey|contrase(?:n|ñ)a)|pass|pw|pword|psk"
)
KEY_PREFIX_WORDS = frozenset(
    [
        "api",
        "access",
        "secret",
        "private",
        "priv",
        "auth",
        "client",
        "signing",
        "encryption",
        "decryption",
        "master",
        "account",
        "license",
        "licence",
        "app",
        "consumer",
        "service",
        "session",
        "storage",
        "webhook",
        "hmac",
        "jwt",
        "ssh",
        "gpg",
        "pgp",
        "deploy",
        "admin",
        "root",
        "subscription",
        "shared",
        "bot",
    ]
)
TRAILING_QUALIFIERS = frozenset(
    [
        "default",
        "value",
        "val",
        "str",
        "string",
        "raw",
        "plain",
        "plaintext",
        "b64",
        "base64",
        "hex",
        "bytes",
        "override",
        "prod",
        "production",
        "dev",
        "development",
        "test",
        "testing",
        "staging",
        "stage",
        "live",
        "main",
        "old",
        "new",
        "local",
        "remote",
        "confirm",
        "confirmation",
        "again",
        "repeat",
        "current",
        "env",
    ]
)
PASSWORD_WORD = re.compile(r"[a-z]*(?:pass|passwd|password|passphrase|pwd|pw|pword|contrase\w*)")
# Weaker context: a long high-entropy value next to these words is scrubbed as high_entropy.
ENTROPY_CONTEXT = re.compile(
    r"key|auth|cred|secret|token|pass|pwd|seed|salt|sig|cookie|session|priv|hmac|cipher|encrypt"
    r"|bearer",
    re.IGNORECASE,
)
# Key words that make a 64-hex value an Ethereum-style private key (and words that rule it out).
CRYPTO_KEY_WORDS = frozenset(
    ["key", "privkey", "privatekey", "secretkey", "pk", "sk", "secret", "mnemonic", "seed"]
)
CRYPTO_EXCLUDE_WORDS = frozenset(
    [
        "pub",
        "public",
        "pubkey",
        "hash",
        "sha",
        "digest",
        "checksum",
        "address",
        "addr",
        "tx",
        "txid",
        "block",
        "root",
        "id",
        "commit",
        "merkle",
        "parent",
        "tree",
        "blob",
        "nonce",
        "salt",
    ]
)
HEX64 = re.compile(r"(?:0x)?[0-9a-fA-F]{64}")
MNEMONIC = re.compile(r"[a-z]{3,8}(?: [a-z]{3,8}){11,23}")

# Values that stand for a secret without being one: templates, variables, environment lookups,
# masks, the usual "changeme" family, and enum values such as GitHub Actions permissions
# (`id-token: write`). Matched against the whole value.
PLACEHOLDER = re.compile(
    r"""(?ix)
    <[^<>]*> | \$\{[^}]*\} | \$\(.*\) | \$[A-Za-z_]\w* | \#\{.*\} | \{\{.*\}\} | \{%.*%\}
    | \{[\w.\-]*\} | %\([\w.\-]+\)[sd] | %[A-Za-z_]\w*% | %s | \?
    | (?:os\.environ|os\.getenv|process\.env|import\.meta\.env|System\.getenv|ENV\[|getenv
       |env::var|std::env|Deno\.env|config\.|settings\.)\b.*
    | x{3,} | \*{3,} | \.{3,} | -{3,} | _{3,} | \#{3,} | 0{4,} | (.)\1{5,}
    | (?:change[_\-\ ]?(?:me|it|this)|placeholder|redacted|removed|hidden|masked|dummy|fake
       |sample|example|test|testing|secret|password|passwd|pass|pwd|token|none|null|nil
       |undefined|true|false|empty|todo|fixme|tbd|n/?a|string|str|value|required|optional
       |default|unset|notset|not[_\-\ ]?set|tokens?
       |read|write|read-all|write-all|yes|no|on|off|enabled|disabled|auto|inherit)
    | (?:your|my|some|insert|enter|replace|put|add|the)[_\-\ ].* | [a-z_]*_here
    """
)
# Placeholders repolm writes itself: never matched again (idempotence).
SCRUBBED = re.compile(r"<SECRET:\w+>|<EMAIL>|<IP>")
# Unquoted values that are code, not literals: attribute chains, constants, calls, types.
REFERENCE = re.compile(
    r"[A-Za-z_]\w*(?:(?:\.|::|->)\w+)+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|self|this|None"
    r"|True|False|nullptr|NULL"
)
TYPE_NAMES = frozenset(
    [
        "str",
        "string",
        "String",
        "&str",
        "bytes",
        "int",
        "i32",
        "i64",
        "u32",
        "u64",
        "usize",
        "bool",
        "boolean",
        "number",
        "any",
        "unknown",
        "object",
        "Object",
        "Option",
        "Optional",
        "SecretStr",
        "SecretString",
        "SecretBytes",
        "Secret",
        "Password",
        "Token",
        "Vec",
        "char",
        "float",
        "double",
        "long",
        "void",
        "Any",
        "dict",
        "list",
        "Buffer",
        "Uint8Array",
    ]
)
SHA_CONTEXT = re.compile(
    r"sha|commit|hash|digest|checksum|integrity|\brev|revision|\bref\b|tree|parent|blob|etag"
    r"|merkle|fingerprint|\bcid\b",
    re.IGNORECASE,
)
PATH_LIKE = re.compile(
    r"(?:/|\./|\.\./|~/|[A-Za-z]:\\)\S*|[\w./\-]+\.(?:pem|key|crt|cer|p12|pfx|json|ya?ml|txt"
    r"|env|cfg|ini|toml|conf|html?)"
)
URL_LIKE = re.compile(r"[a-z][a-z0-9+.\-]*://\S*", re.IGNORECASE)
LONG_QUOTED = re.compile(r"[\"'][A-Za-z0-9+/=_\-]{20,}[\"']")

# -- PII ----------------------------------------------------------------------------------------

# An email is found from its "@domain" (a literal start, fast), then its local part backwards.
EMAIL_DOMAIN = re.compile(
    rb"@((?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24}))(?![\w\-]|\.\w)"
)
EMAIL_LOCAL = re.compile(rb"[A-Za-z0-9][A-Za-z0-9._%+\-]{0,63}\Z")
LOCAL_BYTES = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
# A top-level domain longer than two letters must be one of these: `x@self.weight` is Python.
GTLDS = frozenset(
    [
        "com",
        "net",
        "org",
        "edu",
        "gov",
        "mil",
        "int",
        "io",
        "dev",
        "ai",
        "app",
        "co",
        "info",
        "biz",
        "me",
        "tech",
        "xyz",
        "cloud",
        "page",
        "site",
        "online",
        "email",
        "name",
        "pro",
        "mobi",
        "aero",
        "asia",
        "jobs",
        "museum",
        "travel",
        "systems",
        "solutions",
        "software",
        "network",
        "company",
        "agency",
        "digital",
        "media",
        "blog",
        "shop",
        "store",
        "studio",
        "works",
        "zone",
        "space",
        "team",
        "tools",
        "codes",
        "rocks",
        "ninja",
        "live",
        "life",
        "world",
        "global",
        "group",
        "center",
        "services",
        "consulting",
        "engineering",
    ]
)
SAFE_EMAIL_DOMAINS = ("example.com", "example.org", "example.net")
SAFE_EMAIL_TLDS = frozenset(["example", "test", "invalid", "localhost", "local"])
SAFE_EMAIL_LOCALS = frozenset(("git",))  # git@github.com:owner/repo is a remote

# IPv4 from its second dot on (a literal start), the first octet found backwards.
IPV4_TAIL = re.compile(rb"\.\d{1,3}\.\d{1,3}\.\d{1,3}(?![\w\-]|\.\d)")
VERSION_BEFORE = re.compile(
    rb"(?i)(?:(?<![a-z])(?:version|ver|release|rev|build|tag)[\s\"'=:,]*|@)\Z"
)
KEEP_IPV4 = frozenset(
    [
        "8.8.8.8",
        "8.8.4.4",
        "1.1.1.1",
        "1.0.0.1",
        "9.9.9.9",
        "149.112.112.112",
        "208.67.222.222",
        "208.67.220.220",
        "4.4.4.4",
    ]
)
# Global unicast IPv6 starts with 2 or 3 (2000::/3): one literal-prefixed regex per digit.
IPV6_CANDIDATES = tuple(
    re.compile(rb"%s[0-9A-Fa-f]{3}:[0-9A-Fa-f:]{1,34}(?:\d{1,3}(?:\.\d{1,3}){3})?" % d)
    for d in (b"2", b"3")
)
HEX_BYTES = frozenset(b"0123456789abcdefABCDEF")
BASE64ISH = re.compile(r"[A-Za-z0-9+/=_\-]+")
# detect-secrets' keyword plugin only ever reports quoted values after these words.
DETECT_SECRETS_WORDS = re.compile(
    r"api_?key|auth_?key|service_?key|account_?key|db_?key|database_?key|priv_?key|private_?key"
    r"|client_?key|db_?pass|database_?pass|key_?pass|password|passwd|pwd|secret|contrase",
    re.IGNORECASE,
)
