//! The transport-independent script of one streamed answer: which tokens go out, with which
//! pauses, and where the fault modes bend it. REST and the WebSocket gateway render it in
//! their own frame formats.

use std::time::Duration;

use crate::SimConfig;
use crate::answer::{SimAnswer, split_tokens};
use crate::faults::Faults;

/// How long the `stall` fault stays silent: longer than any idle timeout a client would use.
pub(crate) const STALL: Duration = Duration::from_secs(600);
/// Size of the text in the `huge` fault's frame: above the 16 MiB a client should accept.
pub(crate) const HUGE_FRAME_BYTES: usize = 17 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    Pause(Duration),
    Reasoning(String),
    Text(String),
    /// One frame that is not valid JSON.
    Malformed,
    /// The stream ends here without its final frames.
    Cut,
    /// The connection drops here, without an orderly end.
    Reset,
    /// One frame carrying [`HUGE_FRAME_BYTES`] of text.
    Huge,
}

/// Builds the steps for an answer under the given faults. Unless the script ends in
/// [`Step::Cut`], the transport sends its normal end frames after the last step.
pub(crate) fn build(answer: &SimAnswer, faults: Faults, config: &SimConfig) -> Vec<Step> {
    let (reasoning, mut text) = if faults.empty {
        (Vec::new(), Vec::new())
    } else {
        (split_tokens(&answer.reasoning), split_tokens(&answer.text))
    };
    let text_len = text.len();
    let cut = (faults.cut || faults.reset) && text_len > 0;
    if cut {
        text.truncate((text_len / 2).max(1));
    }
    let malformed_at = faults.malformed.then(|| reasoning.len() + text.len() / 2);

    let frame_delay = Duration::from_millis(if faults.slow {
        config.slow_frame_delay_ms
    } else {
        config.frame_delay_ms
    });
    let mut steps = Vec::with_capacity(2 * (reasoning.len() + text.len()) + 4);
    let push_paced = |steps: &mut Vec<Step>, step: Step, first: bool| {
        let delay = if first {
            Duration::from_millis(config.ttft_ms)
        } else {
            frame_delay
        };
        if !delay.is_zero() {
            steps.push(Step::Pause(delay));
        }
        steps.push(step);
    };

    let tokens = reasoning
        .into_iter()
        .map(|t| Step::Reasoning(t.to_owned()))
        .chain(text.into_iter().map(|t| Step::Text(t.to_owned())));
    let mut sent = 0;
    for step in tokens {
        if malformed_at == Some(sent) {
            push_paced(&mut steps, Step::Malformed, sent == 0);
        }
        push_paced(&mut steps, step, sent == 0 && malformed_at != Some(0));
        sent += 1;
        if faults.stall && sent == 1 {
            steps.push(Step::Pause(STALL));
        }
        if faults.huge && sent == 1 {
            steps.push(Step::Huge);
        }
    }
    if malformed_at == Some(sent) {
        push_paced(&mut steps, Step::Malformed, sent == 0);
    }
    if faults.stall && sent == 0 {
        steps.push(Step::Pause(STALL));
    }
    if cut {
        steps.push(if faults.reset { Step::Reset } else { Step::Cut });
    } else if sent == 0 && config.ttft_ms > 0 {
        // An empty answer still takes its time to first byte before the end frames.
        steps.push(Step::Pause(Duration::from_millis(config.ttft_ms)));
    } else if !frame_delay.is_zero() && sent > 0 {
        steps.push(Step::Pause(frame_delay));
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::answer_for;

    fn texts(steps: &[Step]) -> (String, String) {
        let mut reasoning = String::new();
        let mut text = String::new();
        for step in steps {
            match step {
                Step::Reasoning(t) => reasoning.push_str(t),
                Step::Text(t) => text.push_str(t),
                _ => {}
            }
        }
        (reasoning, text)
    }

    #[test]
    fn normal_script_carries_the_whole_answer_without_pauses() {
        let answer = answer_for("one two three");
        let steps = build(&answer, Faults::default(), &SimConfig::default());
        assert_eq!(
            texts(&steps),
            (answer.reasoning.clone(), answer.text.clone())
        );
        assert!(
            steps
                .iter()
                .all(|s| matches!(s, Step::Reasoning(_) | Step::Text(_)))
        );
    }

    #[test]
    fn pauses_follow_the_config() {
        let config = SimConfig {
            ttft_ms: 30,
            frame_delay_ms: 5,
            ..SimConfig::default()
        };
        let steps = build(&answer_for("a"), Faults::default(), &config);
        assert_eq!(steps[0], Step::Pause(Duration::from_millis(30)));
        assert!(matches!(steps[1], Step::Reasoning(_)));
        assert_eq!(steps[2], Step::Pause(Duration::from_millis(5)));
        let slow = Faults {
            slow: true,
            ..Faults::default()
        };
        let steps = build(&answer_for("a"), slow, &config);
        assert_eq!(steps[2], Step::Pause(Duration::from_millis(200)));
    }

    #[test]
    fn cut_stops_halfway_through_the_text() {
        let answer = answer_for("[[words:10]]");
        let faults = Faults {
            cut: true,
            ..Faults::default()
        };
        let steps = build(&answer, faults, &SimConfig::default());
        assert_eq!(steps.last(), Some(&Step::Cut));
        let (reasoning, text) = texts(&steps);
        assert_eq!(reasoning, answer.reasoning);
        assert_eq!(text, "w1 w2 w3 w4 w5 ");
    }

    #[test]
    fn malformed_frame_sits_mid_stream_and_the_answer_stays_whole() {
        let answer = answer_for("[[words:4]]");
        let faults = Faults {
            malformed: true,
            ..Faults::default()
        };
        let steps = build(&answer, faults, &SimConfig::default());
        let at = steps.iter().position(|s| *s == Step::Malformed).unwrap();
        assert!(at > 0 && at < steps.len() - 1);
        assert_eq!(texts(&steps), (answer.reasoning, answer.text));
    }

    #[test]
    fn stall_pauses_after_the_first_token_and_empty_sends_nothing() {
        let faults = Faults {
            stall: true,
            ..Faults::default()
        };
        let steps = build(&answer_for("x y"), faults, &SimConfig::default());
        assert!(matches!(steps[0], Step::Reasoning(_)));
        assert_eq!(steps[1], Step::Pause(STALL));
        let empty = Faults {
            empty: true,
            ..Faults::default()
        };
        assert!(build(&answer_for("x y"), empty, &SimConfig::default()).is_empty());
    }
}
