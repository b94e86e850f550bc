//! Differential testing: the same SQL through an Ember cluster and through
//! single-process DataFusion, every answer compared in values **and** Arrow
//! types.
//!
//! Ember's promise is "DataFusion, distributed", so DataFusion is the oracle:
//! a statement agrees when both engines fail, or both succeed with the same
//! column types, names and nullability, the same values (floating point to a
//! relative 1e-9) and, where the query orders its result, the same order. On
//! top of that, every batch Ember hands its client must have the schema it
//! announced.
//!
//! Statements come from sqllogictest files ([`slt`]), such as DataFusion's
//! own corpus, and from a seeded generator of queries over the TPC-H schema
//! ([`random`]).

pub mod compare;
pub mod engines;
pub mod random;
pub mod report;
pub mod slt;

pub use compare::{Class, Verdict};
pub use engines::{Engines, Outcome};
pub use report::{Mismatch, Report};
