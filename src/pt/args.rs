//! The `k=v` codecs of the managed-proxy protocol.
//!
//! * Per-connection arguments arrive inside SOCKS5 username/password authentication (RFC 1929):
//!   tor escapes `;` and `\` (not `=`) in every bridge-line `k=v`, joins them with `;`, puts the
//!   first 255 bytes in the username and any rest in the password, and sends a single `0x00` byte as
//!   the password when everything fit. [`parse_socks_args`] undoes that; [`encode_socks_args`] does
//!   it (for tests and for checking a bridge line will fit).
//! * `SMETHOD name IP:PORT ARGS:k=v,k=v` escapes `=`, `,` and `\` inside its ARGS token
//!   ([`format_smethod_args`]).
//!
//! A failure of [`parse_socks_args`] means the client sent malformed arguments: the SOCKS server
//! answers the authentication with `01 01` and closes. Arguments that parse but cannot be used
//! (an unknown module, say) are a later, CONNECT-time failure; see [`crate::pt::bridge`].

/// The most argument bytes RFC 1929 can carry: 255 in the username plus 255 in the password.
pub const MAX_SOCKS_ARGS_LEN: usize = 510;

/// The most bytes tor puts in the username before spilling into the password.
pub const SOCKS_FIELD_MAX: usize = 255;

/// Malformed `k=v` arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    /// More than [`MAX_SOCKS_ARGS_LEN`] bytes.
    #[error(
        "arguments are {len} bytes long; at most {MAX_SOCKS_ARGS_LEN} fit in SOCKS5 authentication"
    )]
    TooLong {
        /// Total length in bytes.
        len: usize,
    },
    /// The bytes are not UTF-8.
    #[error("arguments are not valid UTF-8")]
    NotUtf8,
    /// Two separators in a row, or a separator at either end.
    #[error("argument {index} is empty")]
    EmptyToken {
        /// 1-based position of the empty argument.
        index: usize,
    },
    /// A token without an unescaped `=`.
    #[error("argument {token:?} has no '='")]
    MissingEquals {
        /// The unescaped token.
        token: String,
    },
    /// A token that starts with `=`.
    #[error("argument {token:?} has an empty key")]
    EmptyKey {
        /// The unescaped token.
        token: String,
    },
    /// A `\` with nothing after it.
    #[error("arguments end with a lone backslash")]
    TrailingBackslash,
    /// A key or value that cannot be written in this encoding.
    #[error("argument {key:?}: {why}")]
    Unencodable {
        /// The key (possibly empty).
        key: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Parses the arguments tor packed into an RFC 1929 username and password.
///
/// A password that is exactly one `0x00` byte means "no overflow" and is dropped; otherwise the
/// password continues the username byte for byte, possibly in the middle of an escape or of a
/// UTF-8 sequence, so the two are joined before anything else. Then: tokens split on unescaped `;`,
/// each token's key ends at its first unescaped `=`, and `\x` stands for `x`. Empty input means no
/// arguments. Duplicate keys are kept in order.
pub fn parse_socks_args(
    username: &[u8],
    password: &[u8],
) -> Result<Vec<(String, String)>, ArgsError> {
    let password = if password == [0] { &[][..] } else { password };
    let len = username.len() + password.len();
    if len > MAX_SOCKS_ARGS_LEN {
        return Err(ArgsError::TooLong { len });
    }
    let mut joined = Vec::with_capacity(len);
    joined.extend_from_slice(username);
    joined.extend_from_slice(password);
    let text = String::from_utf8(joined).map_err(|_| ArgsError::NotUtf8)?;
    parse_kv_list(&text)
}

/// Parses a `;`-separated, `\`-escaped `k=v` list (the joined SOCKS argument string).
pub fn parse_kv_list(text: &str) -> Result<Vec<(String, String)>, ArgsError> {
    let mut out = Vec::new();
    if text.is_empty() {
        return Ok(out);
    }
    let mut key = String::new();
    let mut value = String::new();
    // False while reading the key; true once the token's first unescaped '=' was seen.
    let mut in_value = false;
    let mut token_chars = 0usize;
    let mut chars = text.chars();
    loop {
        let c = chars.next();
        match c {
            None | Some(';') => {
                let index = out.len() + 1;
                if token_chars == 0 {
                    return Err(ArgsError::EmptyToken { index });
                }
                if !in_value {
                    return Err(ArgsError::MissingEquals { token: key });
                }
                if key.is_empty() {
                    return Err(ArgsError::EmptyKey {
                        token: format!("={value}"),
                    });
                }
                out.push((std::mem::take(&mut key), std::mem::take(&mut value)));
                in_value = false;
                token_chars = 0;
                if c.is_none() {
                    return Ok(out);
                }
            }
            Some(c) => {
                token_chars += 1;
                let (literal, is_separator) = if c == '\\' {
                    (chars.next().ok_or(ArgsError::TrailingBackslash)?, false)
                } else {
                    (c, c == '=')
                };
                if is_separator && !in_value {
                    in_value = true;
                } else if in_value {
                    value.push(literal);
                } else {
                    key.push(literal);
                }
            }
        }
    }
}

/// Encodes arguments the way tor does for SOCKS: `;` and `\` escaped, tokens joined with `;`.
///
/// Keys must be non-empty and free of `=` (tor does not escape `=`, so the key would end early).
/// Neither keys nor values may contain NUL: tor's bridge lines are C strings, and a NUL that
/// landed alone in the password (an encoding of exactly 256 bytes ending in NUL) would read back
/// as tor's "nothing overflowed" marker and be dropped.
pub fn encode_socks_args<K, V>(args: &[(K, V)]) -> Result<String, ArgsError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = String::new();
    for (i, (k, v)) in args.iter().enumerate() {
        let (k, v) = (k.as_ref(), v.as_ref());
        check_key(k)?;
        if k.contains('=') {
            return Err(ArgsError::Unencodable {
                key: k.to_owned(),
                why: "keys cannot contain '='",
            });
        }
        if k.contains('\0') || v.contains('\0') {
            return Err(ArgsError::Unencodable {
                key: k.to_owned(),
                why: "tor cannot carry a NUL byte",
            });
        }
        if i > 0 {
            out.push(';');
        }
        escape_into(&mut out, k, &[';', '\\']);
        out.push('=');
        escape_into(&mut out, v, &[';', '\\']);
    }
    Ok(out)
}

/// Splits encoded arguments into (username, password) exactly as tor does: at most 255 bytes in
/// the username, the rest in the password, and a lone `0x00` password when nothing is left over.
pub fn split_for_socks(encoded: &[u8]) -> Result<(Vec<u8>, Vec<u8>), ArgsError> {
    if encoded.len() > MAX_SOCKS_ARGS_LEN {
        return Err(ArgsError::TooLong { len: encoded.len() });
    }
    let cut = encoded.len().min(SOCKS_FIELD_MAX);
    let (user, rest) = encoded.split_at(cut);
    let pass = if rest.is_empty() {
        vec![0]
    } else {
        rest.to_vec()
    };
    Ok((user.to_vec(), pass))
}

/// Formats the text after `ARGS:` in an `SMETHOD` line: `k=v` joined with `,`, with `=`, `,`
/// and `\` backslash-escaped in keys and values.
///
/// tor reads only the first space-separated token after the address, so spaces and control
/// characters cannot be carried at all and are refused. tor then copies the text (still escaped)
/// into the bridge's extra-info, so well-behaved values avoid `= , \` altogether.
pub fn format_smethod_args<K, V>(args: &[(K, V)]) -> Result<String, ArgsError>
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut out = String::new();
    for (i, (k, v)) in args.iter().enumerate() {
        let (k, v) = (k.as_ref(), v.as_ref());
        check_key(k)?;
        for s in [k, v] {
            if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ArgsError::Unencodable {
                    key: k.to_owned(),
                    why: "SMETHOD ARGS cannot carry spaces or control characters",
                });
            }
        }
        if i > 0 {
            out.push(',');
        }
        escape_into(&mut out, k, &['=', ',', '\\']);
        out.push('=');
        escape_into(&mut out, v, &['=', ',', '\\']);
    }
    Ok(out)
}

fn check_key(k: &str) -> Result<(), ArgsError> {
    if k.is_empty() {
        return Err(ArgsError::Unencodable {
            key: String::new(),
            why: "keys cannot be empty",
        });
    }
    Ok(())
}

fn escape_into(out: &mut String, s: &str, special: &[char]) {
    for c in s.chars() {
        if special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
