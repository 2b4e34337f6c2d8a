//! The checks made on a statement before it is sent: one statement a call, no placeholder in a
//! `LIMIT`; and [`limit`], the literal to write instead.

use std::fmt;

use super::SqlError;

/// One significant piece of a statement; strings, quoted names and comments are skipped whole.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    Number,
    Placeholder,
    Semicolon,
    Other,
}

/// The statement's tokens outside strings, quoted names and comments.
fn tokens(sql: &str) -> Vec<Token<'_>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' | b'"' | b'`' => i = skip_quoted(bytes, i),
            b'#' => i = skip_line(bytes, i),
            b'-' if bytes.get(i + 1) == Some(&b'-')
                && bytes.get(i + 2).is_none_or(|c| c.is_ascii_whitespace()) =>
            {
                i = skip_line(bytes, i)
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i = sql[i + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |end| i + 2 + end + 2)
            }
            b';' => {
                out.push(Token::Semicolon);
                i += 1;
            }
            b'?' => {
                out.push(Token::Placeholder);
                i += 1;
            }
            b if b.is_ascii_whitespace() => i += 1,
            b if b.is_ascii_digit() => {
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
                out.push(Token::Number);
            }
            b if b.is_ascii_alphabetic() || b == b'_' || b == b'@' || b == b'$' || b >= 0x80 => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric()
                        || matches!(bytes[i], b'_' | b'@' | b'$')
                        || bytes[i] >= 0x80)
                {
                    i += 1;
                }
                out.push(Token::Word(&sql[start..i]));
            }
            _ => {
                out.push(Token::Other);
                i += 1;
            }
        }
    }
    out
}

/// The index after the string or quoted name opening at `start`: a backslash escapes the next
/// byte, a doubled quote stands for itself; an unclosed one runs to the end.
fn skip_quoted(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote != b'`' => i += 2,
            c if c == quote => {
                if bytes.get(i + 1) == Some(&quote) {
                    i += 2;
                } else {
                    return i + 1;
                }
            }
            _ => i += 1,
        }
    }
    bytes.len()
}

fn skip_line(bytes: &[u8], start: usize) -> usize {
    bytes[start..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |end| start + end + 1)
}

/// Refuses what Forge SQL refuses and can be told from the text alone: more than one statement
/// ([`SqlError::MultipleStatements`]) and a placeholder in a `LIMIT` ([`SqlError::LimitPlaceholder`]).
pub(super) fn check(sql: &str) -> Result<(), SqlError> {
    let tokens = tokens(sql);
    if let Some(semicolon) = tokens.iter().position(|t| *t == Token::Semicolon)
        && semicolon + 1 < tokens.len()
    {
        return Err(SqlError::MultipleStatements);
    }
    let mut in_limit = false;
    for token in &tokens {
        match token {
            Token::Word(w) if w.eq_ignore_ascii_case("limit") => in_limit = true,
            Token::Placeholder if in_limit => return Err(SqlError::LimitPlaceholder),
            Token::Word(w) if in_limit && w.eq_ignore_ascii_case("offset") => {}
            Token::Number | Token::Other if in_limit => {}
            _ => in_limit = false,
        }
    }
    Ok(())
}

/// A row count written into a statement as a literal, `LIMIT 50`: Forge SQL refuses `LIMIT ?`.
///
/// ```
/// use connect_axum::forge::sql::limit;
///
/// let wanted = 500; // from a request
/// let query = format!("SELECT id, body FROM note ORDER BY id {}", limit(wanted, 100));
/// assert_eq!(query, "SELECT id, body FROM note ORDER BY id LIMIT 100");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(u64);

/// `LIMIT n`, with `n` brought down to `max`; a number cannot carry SQL, so the literal is safe
/// to format into a statement.
pub fn limit(n: u64, max: u64) -> Limit {
    Limit(n.min(max))
}

impl Limit {
    /// The number of rows it allows.
    pub fn rows(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LIMIT {}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_statement_passes_with_or_without_a_closing_semicolon() {
        for sql in [
            "SELECT 1",
            "SELECT 1;",
            "SELECT 1;  \n\t",
            "SELECT 1; -- done",
            "SELECT ';' AS s, \"a;b\" AS t, `c;d` FROM x",
            "SELECT 'it''s; fine' /* ; */ FROM x # ;\n",
            r"SELECT 'a\'; DROP TABLE x' FROM y",
        ] {
            assert!(check(sql).is_ok(), "{sql:?}");
        }
    }

    #[test]
    fn a_second_statement_is_refused() {
        for sql in [
            "SELECT 1; SELECT 2",
            "SELECT 1;;",
            "DELETE FROM x; DROP TABLE y;",
            "SELECT 'a'; SELECT 'b'",
            "SELECT 1 /* a */; /* b */ SELECT 2",
        ] {
            assert!(
                matches!(check(sql), Err(SqlError::MultipleStatements)),
                "{sql:?}"
            );
        }
    }

    #[test]
    fn a_placeholder_in_a_limit_is_refused() {
        for sql in [
            "SELECT * FROM x LIMIT ?",
            "SELECT * FROM x limit\n?",
            "SELECT * FROM x LIMIT 10, ?",
            "SELECT * FROM x LIMIT 10 OFFSET ?",
            "SELECT * FROM x LIMIT /* n */ ?",
        ] {
            assert!(
                matches!(check(sql), Err(SqlError::LimitPlaceholder)),
                "{sql:?}"
            );
        }
        for sql in [
            "SELECT * FROM x WHERE a = ? LIMIT 10",
            "SELECT * FROM x LIMIT 10 OFFSET 20",
            "SELECT 'LIMIT ?' FROM x WHERE a = ?",
            "SELECT * FROM (SELECT a FROM x LIMIT 5) t WHERE a = ?",
            "SELECT limit_col FROM x WHERE y = ?",
        ] {
            assert!(check(sql).is_ok(), "{sql:?}");
        }
    }

    #[test]
    fn a_limit_is_clamped_and_rendered_as_a_literal() {
        assert_eq!(limit(50, 100).to_string(), "LIMIT 50");
        assert_eq!(limit(5000, 100).to_string(), "LIMIT 100");
        assert_eq!(limit(0, 100).rows(), 0);
        assert_eq!(
            limit(u64::MAX, u64::MAX).to_string(),
            format!("LIMIT {}", u64::MAX)
        );
    }
}
