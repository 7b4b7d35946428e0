"""
The gateway's configuration: the L{Config} value, and how it is loaded from
the environment, the C{.env} file and the C{twistd qeetgw} options.

One module a concern, each importing only those listed before it:

  - C{errors}: L{ConfigError}, and how a parser says what is allowed.
  - C{values}: the value objects a L{Config} holds (L{TrustProxy},
    L{ServiceConfig}, L{RedisURL}).
  - C{jjwt}, C{jwtkeys}: JWT_SECRET read as the auth-service reads it; the
    JWT algorithm families.
  - C{parsers}, C{hosts}, C{urls}, C{paths}, C{tokens}, C{endpoints}: the
    value parsers, by kind of value.
  - C{variable}: a L{Variable}, and how a L{Config} field declares one.
  - C{listen}, C{services}: the variables combined into C{Config.listen}
    and C{Config.services}.
  - C{model}: L{Config}, where each variable is declared once.
  - C{table}: L{VARIABLES}, read from L{Config}'s fields.
  - C{checks}, C{load}: the checks across variables; precedence and
    L{load_config}.
  - C{dotenv}: L{read_dotenv}.

The rest of qeetgw imports from this package, never from its modules; no
module of this package imports anything else of qeetgw's.
"""

from qeetgw.config.dotenv import read_dotenv
from qeetgw.config.errors import ConfigError
from qeetgw.config.jjwt import jjwt_base64_decode
from qeetgw.config.jwtkeys import (
    ASYMMETRIC_ALGORITHMS,
    CURRENT_KEY_LABEL,
    HMAC_ALGORITHMS,
    HMAC_KEY_BYTES,
    JWKS_KEY_LABEL,
    MINIMUM_HMAC_KEY_BYTES,
    HMACKey,
    derive_hmac_key,
    previous_key_label,
    read_hmac_key,
)
from qeetgw.config.load import load_config
from qeetgw.config.model import Config
from qeetgw.config.paths import DEFAULT_PUBLIC_PATHS
from qeetgw.config.table import VARIABLES
from qeetgw.config.tokens import MAXIMUM_JWT_LEEWAY_S
from qeetgw.config.urls import parse_redis_url
from qeetgw.config.values import (
    REDIS_DEFAULT_PORT,
    IPNetwork,
    RedisURL,
    ServiceConfig,
    TrustProxy,
)
from qeetgw.config.variable import Variable

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "CURRENT_KEY_LABEL",
    "DEFAULT_PUBLIC_PATHS",
    "HMAC_ALGORITHMS",
    "HMAC_KEY_BYTES",
    "JWKS_KEY_LABEL",
    "MAXIMUM_JWT_LEEWAY_S",
    "MINIMUM_HMAC_KEY_BYTES",
    "REDIS_DEFAULT_PORT",
    "VARIABLES",
    "Config",
    "ConfigError",
    "HMACKey",
    "IPNetwork",
    "RedisURL",
    "ServiceConfig",
    "TrustProxy",
    "Variable",
    "derive_hmac_key",
    "jjwt_base64_decode",
    "load_config",
    "parse_redis_url",
    "previous_key_label",
    "read_dotenv",
    "read_hmac_key",
]
