//! User-defined functions a cluster knows.
//!
//! Plans travel with functions named, never with their code: the scheduler
//! needs a function to plan a query that calls it, and every executor needs
//! it to run one. Both are started with the same [`Functions`] (see
//! `ember_scheduler::SchedulerBuilder` and `ember_executor::ExecutorBuilder`,
//! or `ember::StandaloneOptions` for an embedded cluster). An executor asked
//! to run a function it lacks fails the task with a [`MissingFunction`]
//! naming the function, found again by [`find_missing_function`].

use std::sync::Arc;

use datafusion::error::DataFusionError;
use datafusion::logical_expr::{AggregateUDF, ScalarUDF, WindowUDF};
use datafusion::prelude::SessionContext;

/// A set of scalar, aggregate and window UDFs.
#[derive(Debug, Clone, Default)]
pub struct Functions {
    scalar: Vec<Arc<ScalarUDF>>,
    aggregate: Vec<Arc<AggregateUDF>>,
    window: Vec<Arc<WindowUDF>>,
}

impl Functions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a scalar function (replacing one of the same name).
    pub fn with_udf(mut self, udf: ScalarUDF) -> Self {
        self.scalar.retain(|f| f.name() != udf.name());
        self.scalar.push(Arc::new(udf));
        self
    }

    /// Adds an aggregate function (replacing one of the same name).
    pub fn with_udaf(mut self, udaf: AggregateUDF) -> Self {
        self.aggregate.retain(|f| f.name() != udaf.name());
        self.aggregate.push(Arc::new(udaf));
        self
    }

    /// Adds a window function (replacing one of the same name).
    pub fn with_udwf(mut self, udwf: WindowUDF) -> Self {
        self.window.retain(|f| f.name() != udwf.name());
        self.window.push(Arc::new(udwf));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.scalar.is_empty() && self.aggregate.is_empty() && self.window.is_empty()
    }

    /// The functions' names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .scalar
            .iter()
            .map(|f| f.name().to_string())
            .chain(self.aggregate.iter().map(|f| f.name().to_string()))
            .chain(self.window.iter().map(|f| f.name().to_string()))
            .collect();
        names.sort();
        names
    }

    /// Registers every function in `ctx`.
    pub fn register_in(&self, ctx: &SessionContext) {
        for f in &self.scalar {
            ctx.register_udf(f.as_ref().clone());
        }
        for f in &self.aggregate {
            ctx.register_udaf(f.as_ref().clone());
        }
        for f in &self.window {
            ctx.register_udwf(f.as_ref().clone());
        }
    }
}

/// Gives a builder with a `functions: Functions` field the methods
/// `with_udf`, `with_udaf` and `with_udwf`; `$who` says who gets the
/// functions (for the docs), e.g. `"the executor's tasks"`.
#[macro_export]
macro_rules! with_function_methods {
    ($who:literal) => {
        #[doc = concat!("Adds scalar function `udf` for ", $who, ".")]
        pub fn with_udf(mut self, udf: ::datafusion::logical_expr::ScalarUDF) -> Self {
            self.functions = self.functions.with_udf(udf);
            self
        }

        #[doc = concat!("Adds aggregate function `udaf` for ", $who, ".")]
        pub fn with_udaf(mut self, udaf: ::datafusion::logical_expr::AggregateUDF) -> Self {
            self.functions = self.functions.with_udaf(udaf);
            self
        }

        #[doc = concat!("Adds window function `udwf` for ", $who, ".")]
        pub fn with_udwf(mut self, udwf: ::datafusion::logical_expr::WindowUDF) -> Self {
            self.functions = self.functions.with_udwf(udwf);
            self
        }
    };
}

/// A plan names a function this process was not started with.
#[derive(Debug, Clone, thiserror::Error)]
#[error("function '{name}' is not available here")]
pub struct MissingFunction {
    pub name: String,
}

impl MissingFunction {
    pub fn error(name: &str) -> DataFusionError {
        DataFusionError::External(Box::new(MissingFunction {
            name: name.to_string(),
        }))
    }
}

/// The [`MissingFunction`] inside `e`, however DataFusion wrapped it.
pub fn find_missing_function(e: &DataFusionError) -> Option<&MissingFunction> {
    match e.find_root() {
        DataFusionError::External(inner) => inner.downcast_ref::<MissingFunction>(),
        _ => None,
    }
}
