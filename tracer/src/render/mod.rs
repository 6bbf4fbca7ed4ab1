//! Renderers: the same stories as terminal text or JSON Lines.

pub mod json;
pub mod terminal;
