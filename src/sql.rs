//! Splitting a script into statements.

/// One piece of interactive input: a SQL statement or a meta-command (a
/// line starting with `\` where a statement could start, e.g. after `;`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A SQL statement, without its `;`.
    Statement(String),
    /// A meta-command line such as `\d lineitem`.
    Meta(String),
}

/// Does `text` set a secret (`ember.s3.secret_access_key`, `...session_token`,
/// `...access_key_id`, or an `aws.*` credential option)? Such input is
/// never written to a history file.
pub fn sets_secret(text: &str) -> bool {
    ember_planner::config::mentions_secret(text)
}

/// Splits `text` at top-level `;`, respecting quotes ('…', "…"), line
/// comments (`-- …`) and block comments (`/* … */`). Empty statements (and
/// statements made only of comments) are dropped.
pub fn split_statements(text: &str) -> Vec<String> {
    let (pieces, unterminated) = scan(text);
    pieces
        .into_iter()
        .filter_map(|p| match p {
            Piece::Statement(s) => Some(s),
            Piece::Meta(_) => None,
        })
        .chain(unterminated)
        .collect()
}

/// Does `text` end with a complete statement (a top-level `;`, ignoring
/// trailing whitespace and comments)? Used by line-oriented input.
pub fn is_complete(text: &str) -> bool {
    let (pieces, unterminated) = scan(text);
    !pieces.is_empty() && unterminated.is_none()
}

/// The statements and meta-commands of interactive input, in order, if it
/// is complete: every statement ends with `;` (`SELECT 1; \d` is a
/// statement and a meta-command). `None` while a statement is unfinished.
pub fn split_input(text: &str) -> Option<Vec<Piece>> {
    let (pieces, unterminated) = scan(text);
    unterminated.is_none().then_some(pieces)
}

/// The `;`-terminated statements and the meta-commands of `text`, and the
/// unterminated code after the last of them (if any).
fn scan(text: &str) -> (Vec<Piece>, Option<String>) {
    let mut out = vec![];
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    let mut has_code = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' if !has_code => {
                // A meta-command where a statement could start: the rest of
                // the line.
                let mut meta = String::from(c);
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                    meta.push(d);
                }
                out.push(Piece::Meta(meta.trim().to_string()));
                current.clear();
            }
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
                    out.push(Piece::Statement(current.trim().to_string()));
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
    fn statements_setting_secrets_are_recognised() {
        assert!(sets_secret("SET ember.s3.secret_access_key = 'x'"));
        assert!(sets_secret("set EMBER.S3.SESSION_TOKEN='x'"));
        assert!(!sets_secret("SET ember.s3.region = 'eu-west-1'"));
        assert!(!sets_secret("SELECT 1"));
    }

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
    fn interactive_input_mixes_statements_and_meta_commands() {
        assert_eq!(
            split_input("SELECT 1; \\d\nSELECT\n  2;\n\\timing on\n"),
            Some(vec![
                Piece::Statement("SELECT 1".into()),
                Piece::Meta("\\d".into()),
                Piece::Statement("SELECT\n  2".into()),
                Piece::Meta("\\timing on".into()),
            ])
        );
        assert_eq!(split_input("SELECT 1;\nSELECT"), None);
        assert_eq!(
            split_input("SELECT '\\d';"),
            Some(vec![Piece::Statement("SELECT '\\d'".into())])
        );
        assert_eq!(split_input("  "), Some(vec![]));
    }

    #[test]
    fn completeness_follows_the_last_semicolon() {
        assert!(is_complete("select 1;"));
        assert!(is_complete("select 1; -- done"));
        assert!(!is_complete("select 1"));
        assert!(!is_complete("select ';'"));
    }
}
