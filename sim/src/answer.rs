//! The deterministic answers the simulator gives, and how they are cut into stream tokens.

/// Largest word count a `[[words:N]]` marker may ask for.
pub const MAX_WORDS: usize = 100_000;

/// What the simulated model answers to one prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimAnswer {
    /// The reasoning ("thinking") text, streamed before the answer.
    pub reasoning: String,
    /// The answer text.
    pub text: String,
}

/// The deterministic answer for a prompt (the exact `message` text the client sent).
///
/// `reasoning` is `Thinking about: <prompt>`; `text` is `Echo: <prompt>`, unless the prompt
/// contains a `[[words:N]]` marker (N ≤ [`MAX_WORDS`]), in which case `text` is the N words
/// `w1 w2 ... wN`, for benchmarks and long streams.
pub fn answer_for(prompt: &str) -> SimAnswer {
    let text = match words_marker(prompt) {
        Some(count) => numbered_words(count),
        None => format!("Echo: {prompt}"),
    };
    SimAnswer {
        reasoning: format!("Thinking about: {prompt}"),
        text,
    }
}

/// The N of the first well-formed `[[words:N]]` marker in the prompt, if it is in range.
fn words_marker(prompt: &str) -> Option<usize> {
    const OPEN: &str = "[[words:";
    let mut rest = prompt;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0
            && after[digits..].starts_with("]]")
            && let Ok(count) = after[..digits].parse::<usize>()
            && count <= MAX_WORDS
        {
            return Some(count);
        }
        rest = after;
    }
    None
}

fn numbered_words(count: usize) -> String {
    let mut text = String::with_capacity(count * 7);
    for i in 1..=count {
        if i > 1 {
            text.push(' ');
        }
        text.push('w');
        text.push_str(&i.to_string());
    }
    text
}

/// Splits text into stream tokens: each token is one word followed by the whitespace after
/// it (leading whitespace stays with the first token), so the tokens concatenate back to
/// exactly the input. Empty input gives no tokens.
pub fn split_tokens(text: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut start = 0;
    let mut token_has_word = false;
    let mut previous_was_space = false;
    for (index, ch) in text.char_indices() {
        let is_space = ch.is_whitespace();
        if !is_space {
            if previous_was_space && token_has_word {
                tokens.push(&text[start..index]);
                start = index;
            }
            token_has_word = true;
        }
        previous_was_space = is_space;
    }
    if start < text.len() {
        tokens.push(&text[start..]);
    }
    tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_prompt_echoes() {
        let answer = answer_for("hello there");
        assert_eq!(answer.reasoning, "Thinking about: hello there");
        assert_eq!(answer.text, "Echo: hello there");
    }

    #[test]
    fn words_marker_gives_numbered_words() {
        let answer = answer_for("bench [[words:5]] please");
        assert_eq!(answer.text, "w1 w2 w3 w4 w5");
        assert_eq!(answer.reasoning, "Thinking about: bench [[words:5]] please");
        assert_eq!(answer_for("[[words:0]]").text, "");
        let big = answer_for("[[words:100000]]").text;
        assert_eq!(big.split(' ').count(), 100_000);
        assert!(big.ends_with(" w100000"));
    }

    #[test]
    fn malformed_or_oversized_words_marker_echoes() {
        assert_eq!(answer_for("[[words:]]").text, "Echo: [[words:]]");
        assert_eq!(answer_for("[[words:x]]").text, "Echo: [[words:x]]");
        assert_eq!(answer_for("[[words:3]").text, "Echo: [[words:3]");
        assert_eq!(
            answer_for("[[words:100001]]").text,
            "Echo: [[words:100001]]"
        );
        // The first well-formed marker counts.
        assert_eq!(answer_for("[[words:x]] [[words:2]]").text, "w1 w2");
    }

    #[test]
    fn tokens_keep_whitespace_and_concatenate_back() {
        assert_eq!(
            split_tokens("Echo: hi  there"),
            vec!["Echo: ", "hi  ", "there"]
        );
        assert_eq!(
            split_tokens("  lead\ntrail \t"),
            vec!["  lead\n", "trail \t"]
        );
        assert_eq!(split_tokens("one"), vec!["one"]);
        assert_eq!(split_tokens("   "), vec!["   "]);
        assert!(split_tokens("").is_empty());
        for text in [
            "a b c",
            " x",
            "y ",
            "é ü\u{3000}漢字 ok",
            "\n\nline\n",
            "Echo: [[words:3]]",
        ] {
            assert_eq!(split_tokens(text).concat(), text);
            assert!(split_tokens(text).iter().all(|t| !t.is_empty()));
        }
    }

    #[test]
    fn every_token_holds_one_word() {
        let tokens = split_tokens("w1 w2 w3 w4");
        assert_eq!(tokens.len(), 4);
        assert!(tokens.iter().all(|t| t.split_whitespace().count() == 1));
    }
}
