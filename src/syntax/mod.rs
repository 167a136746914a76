//! The configuration language, below the model built from it: KDL documents and their parsers,
//! diagnostics with spans, the typed node reader, value checks, `when` and template expressions,
//! and local files named by a configuration.
//!
//! It sits below both `config` (which assembles hosts, tasks and settings) and `resources` (where
//! each resource type reads its own node), so that a type's parsing lives with the rest of the
//! type without a circle between the two. This is the only module that names `kdl` types.

pub mod diagnostic;
pub mod expr;
pub mod fields;
pub mod files;
pub mod kdl;
pub mod reader;
pub mod values;
