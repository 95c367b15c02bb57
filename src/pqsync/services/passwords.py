"""Password hashing (argon2)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


MIN_PASSWORD_LENGTH = 12
# Words that, padded with digits and symbols, make the passwords guessed first.
_COMMON_WORDS = frozenset(
    [
        "password",
        "passw0rd",
        "qwerty",
        "qwertyuiop",
        "asdfgh",
        "asdfghjkl",
        "zxcvbnm",
        "letmein",
        "welcome",
        "iloveyou",
        "admin",
        "administrator",
        "changeme",
        "monkey",
        "dragon",
        "football",
        "baseball",
        "soccer",
        "abc",
        "abcdef",
        "abcdefgh",
        "trustno1",
        "sunshine",
        "princess",
        "master",
        "shadow",
        "superman",
        "batman",
        "login",
        "starwars",
        "hello",
        "secret",
        "whatever",
        "freedom",
        "clinic",
        "pqsync",
        "intakeq",
        "moonlit",
        "recovery",
    ]
)
_PADDING = "0123456789!@#$%^&*()-_=+.?,;: "


def password_problem(password: str, email: str | None = None) -> str | None:
    """Why a new password is refused (too short, or one of the first guessed), or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"the password must have at least {MIN_PASSWORD_LENGTH} characters"
    lowered = password.lower()
    core = lowered.strip(_PADDING)
    halves = {core[: len(core) // 2], core[len(core) // 2 :]} if core else set()
    if (
        len(set(lowered)) <= 2
        or not core
        or core in _COMMON_WORDS
        or (len(halves) == 1 and halves <= _COMMON_WORDS)  # "passwordpassword"
        or lowered in ("1234567890" * 3, "0987654321" * 3)
        or (email is not None and core in {email.lower(), email.lower().split("@", 1)[0]})
    ):
        return "the password is one of the first ones guessed: choose another"
    return None
