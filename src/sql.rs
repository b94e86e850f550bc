//! Splitting a script into statements.

/// Splits `text` at top-level `;`, respecting quotes ('…', "…"), line
/// comments (`-- …`) and block comments (`/* … */`). Empty statements (and
/// statements made only of comments) are dropped.
pub fn split_statements(text: &str) -> Vec<String> {
    let (mut statements, unterminated) = scan(text);
    statements.extend(unterminated);
    statements
}

/// Does `text` end with a complete statement (a top-level `;`, ignoring
/// trailing whitespace and comments)? Used by line-oriented input.
pub fn is_complete(text: &str) -> bool {
    let (statements, unterminated) = scan(text);
    !statements.is_empty() && unterminated.is_none()
}

/// The `;`-terminated statements of `text`, and the unterminated code after
/// the last `;` (if any).
fn scan(text: &str) -> (Vec<String>, Option<String>) {
    let mut out = vec![];
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut has_code = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                has_code = true;
                current.push(c);
                while let Some(d) = chars.next() {
                    current.push(d);
                    if d == c {
                        // A doubled quote is an escaped quote.
                        if chars.peek() == Some(&c) {
                            current.push(c);
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
                current.push(' ');
            }
            ';' => {
                if has_code {
                    out.push(current.trim().to_string());
                }
                current.clear();
                has_code = false;
            }
            _ => {
                if !c.is_whitespace() {
                    has_code = true;
                }
                current.push(c);
            }
        }
    }
    let unterminated = has_code.then(|| current.trim().to_string());
    (out, unterminated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_on_top_level_semicolons_only() {
        let s = "select 'a;b' as x; -- c;\nselect \"q;\" from t /* ; */;\n\n;";
        assert_eq!(
            split_statements(s),
            vec!["select 'a;b' as x", "select \"q;\" from t"]
        );
    }

    #[test]
    fn doubled_quotes_stay_inside_the_string() {
        assert_eq!(
            split_statements("select 'it''s;'; select 2"),
            vec!["select 'it''s;'", "select 2"]
        );
    }

    #[test]
    fn completeness_follows_the_last_semicolon() {
        assert!(is_complete("select 1;"));
        assert!(is_complete("select 1; -- done"));
        assert!(!is_complete("select 1"));
        assert!(!is_complete("select ';'"));
    }
}
