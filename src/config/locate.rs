//! Maps a field path such as `routes[1].credentials[0].secret` to its line and column in the YAML text, so
//! that errors found after deserialization (cross-references, value checks) still point into the file.
//!
//! serde_yaml keeps no spans once values are built, so this walks the parser's marked events once.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};

/// Line and column (1-based) of every key and sequence item, by path.
pub struct Locator {
    marks: HashMap<String, (usize, usize)>,
}

enum Frame {
    Map { key: Option<String>, path: String },
    Seq { index: usize, path: String },
}

impl Locator {
    pub fn new(text: &str) -> Self {
        let mut marks = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut parser = Parser::new_from_str(text);
        while let Ok((event, mark)) = parser.next_token() {
            let at = (mark.line(), mark.col() + 1);
            let child_path = child_path(&mut stack, &mut marks, at, &event);
            match event {
                Event::StreamEnd => break,
                Event::MappingStart(..) => stack.push(Frame::Map {
                    key: None,
                    path: child_path.unwrap_or_default(),
                }),
                Event::SequenceStart(..) => stack.push(Frame::Seq {
                    index: 0,
                    path: child_path.unwrap_or_default(),
                }),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Self { marks }
    }

    /// The position of `path`, or of its nearest ancestor present in the file (a missing field points at the
    /// map that should have held it).
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(at) = self.marks.get(p) {
                return Some(*at);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

/// Advances the innermost frame past `event` and returns the path of the value the event starts, if any.
fn child_path(
    stack: &mut [Frame],
    marks: &mut HashMap<String, (usize, usize)>,
    at: (usize, usize),
    event: &Event,
) -> Option<String> {
    let is_value = matches!(
        event,
        Event::Scalar(..) | Event::MappingStart(..) | Event::SequenceStart(..) | Event::Alias(..)
    );
    if !is_value {
        return None;
    }
    match stack.last_mut()? {
        Frame::Map { key, path } => match key.take() {
            None => {
                if let Event::Scalar(k, ..) = event {
                    let full = if path.is_empty() {
                        k.clone()
                    } else {
                        // A map's own position is its first key: the parser marks a block mapping only after
                        // looking ahead past that key.
                        marks.entry(path.clone()).or_insert(at);
                        format!("{path}.{k}")
                    };
                    marks.insert(full.clone(), at);
                    *key = Some(full);
                }
                None
            }
            Some(full) => Some(full),
        },
        Frame::Seq { index, path } => {
            let full = format!("{path}[{index}]");
            *index += 1;
            if matches!(event, Event::Scalar(..) | Event::Alias(..)) {
                marks.insert(full.clone(), at);
            }
            Some(full)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_items_and_nearest_ancestor() {
        let text =
            "listen: x\nroutes:\n  - name: a\n    credentials:\n      - secret: s\n        header: h\n  - name: b\n";
        let loc = Locator::new(text);
        assert_eq!(loc.find("listen"), Some((1, 1)));
        assert_eq!(loc.find("routes[0].credentials[0].header"), Some((6, 9)));
        let mut m: Vec<_> = loc.marks.iter().collect();
        m.sort();
        eprintln!("{m:?}");
        assert_eq!(loc.find("routes[1].name"), Some((7, 5)));
        assert_eq!(loc.find("routes[1].hosts"), Some((7, 5)));
        assert_eq!(loc.find("nothing"), None);
    }
}
