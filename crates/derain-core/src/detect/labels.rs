//! Class names: the 80 COCO classes in the usual order by default, or one name a line from a file;
//! and the class filter, written as names or ids ("car,truck,0").

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The 80 COCO classes in the order COCO-trained YOLO models number them.
pub const COCO: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// What went wrong with a labels file or a class filter.
#[derive(Debug, thiserror::Error)]
pub enum LabelsError {
    #[error(
        "cannot read labels file '{path}': {source}. Check the path (the `labels-file` setting)"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "labels file '{origin}' has an empty line {line}: give one class name a line, in class-id \
         order, with no gaps"
    )]
    EmptyLine { origin: String, line: usize },
    #[error("labels file '{origin}' holds no class names")]
    NoLabels { origin: String },
    #[error(
        "class filter entry '{entry}' is neither a class id nor one of the label names (e.g. \
         'car', 'person', or an id such as 2)"
    )]
    UnknownClass { entry: String },
}

/// Class names by class id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Labels(Vec<String>);

impl Default for Labels {
    fn default() -> Self {
        Self::coco()
    }
}

impl Labels {
    /// The 80 COCO names.
    pub fn coco() -> Self {
        Self(COCO.iter().map(|s| (*s).to_owned()).collect())
    }

    /// One name a line (surrounding spaces trimmed, trailing empty lines ignored).
    pub fn parse(text: &str, origin: &str) -> Result<Self, LabelsError> {
        let mut names: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
        while names.last().is_some_and(|n| n.is_empty()) {
            names.pop();
        }
        if names.is_empty() {
            return Err(LabelsError::NoLabels {
                origin: origin.to_owned(),
            });
        }
        if let Some(i) = names.iter().position(|n| n.is_empty()) {
            return Err(LabelsError::EmptyLine {
                origin: origin.to_owned(),
                line: i + 1,
            });
        }
        Ok(Self(names))
    }

    /// Reads a labels file ([`Labels::parse`]).
    pub fn from_file(path: &Path) -> Result<Self, LabelsError> {
        let text = std::fs::read_to_string(path).map_err(|source| LabelsError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name of `class_id`, or `class-N` past the end of the list.
    pub fn name(&self, class_id: usize) -> Cow<'_, str> {
        match self.0.get(class_id) {
            Some(n) => Cow::Borrowed(n),
            None => Cow::Owned(format!("class-{class_id}")),
        }
    }

    /// The id of a name (exact, then ignoring case).
    pub fn id_of(&self, name: &str) -> Option<usize> {
        self.0
            .iter()
            .position(|n| n == name)
            .or_else(|| self.0.iter().position(|n| n.eq_ignore_ascii_case(name)))
    }

    /// Resolves a class filter: comma-separated names or ids; empty keeps every class (`None`).
    pub fn class_filter(&self, spec: &str) -> Result<Option<BTreeSet<usize>>, LabelsError> {
        let mut ids = BTreeSet::new();
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let id = entry
                .parse::<usize>()
                .ok()
                .or_else(|| self.id_of(entry))
                .ok_or_else(|| LabelsError::UnknownClass {
                    entry: entry.to_owned(),
                })?;
            ids.insert(id);
        }
        Ok((!ids.is_empty()).then_some(ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coco_order_matches_the_data_readme() {
        let l = Labels::coco();
        assert_eq!(l.len(), 80);
        for (id, name) in [
            (0, "person"),
            (1, "bicycle"),
            (2, "car"),
            (3, "motorcycle"),
            (5, "bus"),
            (7, "truck"),
            (9, "traffic light"),
            (11, "stop sign"),
            (79, "toothbrush"),
        ] {
            assert_eq!(l.name(id), name);
        }
        assert_eq!(l.name(80), "class-80");
    }

    #[test]
    fn file_format_and_errors() {
        let l = Labels::parse(" wet road \ncar\n\n\n", "x").unwrap();
        assert_eq!((l.len(), l.name(0).as_ref()), (2, "wet road"));
        assert!(matches!(
            Labels::parse("a\n\nb\n", "x"),
            Err(LabelsError::EmptyLine { line: 2, .. })
        ));
        assert!(matches!(
            Labels::parse("\n", "x"),
            Err(LabelsError::NoLabels { .. })
        ));
        let e = Labels::from_file(Path::new("/no/such/labels.txt")).unwrap_err();
        assert!(e.to_string().contains("/no/such/labels.txt"), "{e}");
    }

    #[test]
    fn class_filter_takes_names_and_ids() {
        let l = Labels::coco();
        assert_eq!(l.class_filter(" ").unwrap(), None);
        let f = l.class_filter("car, Truck,0").unwrap().unwrap();
        assert_eq!(f.into_iter().collect::<Vec<_>>(), vec![0, 2, 7]);
        let e = l.class_filter("car,lorry").unwrap_err();
        assert!(e.to_string().contains("'lorry'"), "{e}");
    }
}
