//! A seeded generator of SQL queries over the TPC-H schema, in the spirit of
//! SQLsmith and SQLancer: joins of every type along the schema's foreign
//! keys, filters, grouping (plain, `ROLLUP`, `CUBE`, `GROUPING SETS`),
//! `HAVING`, window functions with frames, set operations, `IN` / `EXISTS` /
//! scalar subqueries and nested types. The same seed gives the same queries
//! on every machine (the generator is SplitMix64, ten lines, rather than a
//! `rand` generator whose streams may change between versions).
//!
//! Queries are deterministic by construction, so any difference between the
//! engines is a bug: window orderings and ordered aggregates end with a
//! unique key, and a `LIMIT` comes with an `ORDER BY` over every output
//! column.

use std::fmt::Write;

/// SplitMix64: a tiny, well-known, portable generator.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// One TPC-H table as the generator sees it.
struct Table {
    name: &'static str,
    /// Columns that together identify a row.
    key: &'static [&'static str],
    /// Numeric columns, with a value range for predicates.
    numbers: &'static [(&'static str, i64, i64)],
    /// Low-cardinality text columns, with values they hold.
    categories: &'static [(&'static str, &'static [&'static str])],
    /// Date columns.
    dates: &'static [&'static str],
}

const TABLES: &[Table] = &[
    Table {
        name: "region",
        key: &["r_regionkey"],
        numbers: &[("r_regionkey", 0, 4)],
        categories: &[("r_name", &["AFRICA", "AMERICA", "ASIA", "EUROPE"])],
        dates: &[],
    },
    Table {
        name: "nation",
        key: &["n_nationkey"],
        numbers: &[("n_nationkey", 0, 24), ("n_regionkey", 0, 4)],
        categories: &[(
            "n_name",
            &["BRAZIL", "CANADA", "CHINA", "FRANCE", "GERMANY"],
        )],
        dates: &[],
    },
    Table {
        name: "supplier",
        key: &["s_suppkey"],
        numbers: &[
            ("s_suppkey", 1, 100),
            ("s_nationkey", 0, 24),
            ("s_acctbal", -999, 9999),
        ],
        categories: &[],
        dates: &[],
    },
    Table {
        name: "customer",
        key: &["c_custkey"],
        numbers: &[
            ("c_custkey", 1, 1500),
            ("c_nationkey", 0, 24),
            ("c_acctbal", -999, 9999),
        ],
        categories: &[(
            "c_mktsegment",
            &[
                "AUTOMOBILE",
                "BUILDING",
                "FURNITURE",
                "HOUSEHOLD",
                "MACHINERY",
            ],
        )],
        dates: &[],
    },
    Table {
        name: "part",
        key: &["p_partkey"],
        numbers: &[
            ("p_partkey", 1, 2000),
            ("p_size", 1, 50),
            ("p_retailprice", 900, 2000),
        ],
        categories: &[
            (
                "p_mfgr",
                &["Manufacturer#1", "Manufacturer#2", "Manufacturer#3"],
            ),
            (
                "p_container",
                &["SM BOX", "LG CASE", "MED BAG", "JUMBO PKG"],
            ),
        ],
        dates: &[],
    },
    Table {
        name: "partsupp",
        key: &["ps_partkey", "ps_suppkey"],
        numbers: &[
            ("ps_partkey", 1, 2000),
            ("ps_suppkey", 1, 100),
            ("ps_availqty", 1, 9999),
            ("ps_supplycost", 1, 1000),
        ],
        categories: &[],
        dates: &[],
    },
    Table {
        name: "orders",
        key: &["o_orderkey"],
        numbers: &[
            ("o_orderkey", 1, 60000),
            ("o_custkey", 1, 1500),
            ("o_totalprice", 800, 500000),
            ("o_shippriority", 0, 0),
        ],
        categories: &[
            ("o_orderstatus", &["F", "O", "P"]),
            (
                "o_orderpriority",
                &["1-URGENT", "2-HIGH", "3-MEDIUM", "4-NOT SPECIFIED", "5-LOW"],
            ),
        ],
        dates: &["o_orderdate"],
    },
    Table {
        name: "lineitem",
        key: &["l_orderkey", "l_linenumber"],
        numbers: &[
            ("l_orderkey", 1, 60000),
            ("l_partkey", 1, 2000),
            ("l_suppkey", 1, 100),
            ("l_linenumber", 1, 7),
            ("l_quantity", 1, 50),
            ("l_extendedprice", 900, 100000),
            ("l_discount", 0, 0),
        ],
        categories: &[
            ("l_returnflag", &["A", "N", "R"]),
            ("l_linestatus", &["F", "O"]),
            ("l_shipmode", &["AIR", "MAIL", "RAIL", "SHIP", "TRUCK"]),
        ],
        dates: &["l_shipdate", "l_commitdate"],
    },
];

/// Foreign keys: (table, column, referenced table, referenced column).
const JOINS: &[(&str, &str, &str, &str)] = &[
    ("nation", "n_regionkey", "region", "r_regionkey"),
    ("supplier", "s_nationkey", "nation", "n_nationkey"),
    ("customer", "c_nationkey", "nation", "n_nationkey"),
    ("orders", "o_custkey", "customer", "c_custkey"),
    ("lineitem", "l_orderkey", "orders", "o_orderkey"),
    ("lineitem", "l_partkey", "part", "p_partkey"),
    ("lineitem", "l_suppkey", "supplier", "s_suppkey"),
    ("partsupp", "ps_partkey", "part", "p_partkey"),
    ("partsupp", "ps_suppkey", "supplier", "s_suppkey"),
];

/// `items` without repeats, first occurrences kept in order.
fn unique(items: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    items
        .into_iter()
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

fn table(name: &str) -> &'static Table {
    TABLES
        .iter()
        .find(|t| t.name == name)
        .expect("a TPC-H table")
}

/// Generates queries from a seed.
pub struct Generator {
    rng: Rng,
}

impl Generator {
    /// A generator whose queries are fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng::new(seed),
        }
    }

    /// The next query.
    pub fn query(&mut self) -> String {
        match self.rng.below(8) {
            0 => self.filter_project(),
            1 => self.join(),
            2 | 3 => self.aggregate(),
            4 => self.window(),
            5 => self.set_operation(),
            6 => self.subquery(),
            _ => self.nested(),
        }
    }

    /// A predicate on `t` (qualified with `alias`).
    fn predicate(&mut self, t: &Table, alias: &str) -> String {
        let mut kinds = vec![0];
        if !t.categories.is_empty() {
            kinds.push(1);
        }
        if !t.dates.is_empty() {
            kinds.push(2);
        }
        match *self.rng.pick(&kinds) {
            1 => {
                let (col, values) = *self.rng.pick(t.categories);
                match self.rng.below(3) {
                    0 => format!("{alias}.{col} = '{}'", self.rng.pick(values)),
                    1 => format!(
                        "{alias}.{col} IN ('{}', '{}')",
                        self.rng.pick(values),
                        self.rng.pick(values)
                    ),
                    _ => format!("{alias}.{col} <> '{}'", self.rng.pick(values)),
                }
            }
            2 => {
                let col = self.rng.pick(t.dates);
                let year = 1992 + self.rng.below(7);
                let op = self.rng.pick(&["<", ">=", "<="]);
                format!(
                    "{alias}.{col} {op} DATE '{year}-0{}-15'",
                    1 + self.rng.below(9)
                )
            }
            _ => {
                let (col, lo, hi) = *self.rng.pick(t.numbers);
                let v = lo + self.rng.below((hi - lo + 1) as usize) as i64;
                match self.rng.below(4) {
                    0 => format!("{alias}.{col} < {v}"),
                    1 => format!("{alias}.{col} >= {v}"),
                    2 => format!("{alias}.{col} BETWEEN {v} AND {}", v + (hi - lo) / 4 + 1),
                    _ => format!("{alias}.{col} % 7 = {}", self.rng.below(7)),
                }
            }
        }
    }

    /// One to two predicates joined with AND or OR.
    fn filter(&mut self, t: &Table, alias: &str) -> String {
        let first = self.predicate(t, alias);
        if self.rng.chance(40) {
            let op = if self.rng.chance(70) { "AND" } else { "OR" };
            format!("({first} {op} {})", self.predicate(t, alias))
        } else {
            first
        }
    }

    /// A filter that keeps big tables to a size worth comparing.
    fn selective(&mut self, t: &Table, alias: &str) -> String {
        let f = self.filter(t, alias);
        match t.name {
            "lineitem" | "orders" | "partsupp" => {
                let (col, _, hi) = t.numbers[0];
                format!("{f} AND {alias}.{col} < {}", hi / 10)
            }
            _ => f,
        }
    }

    fn columns(&mut self, t: &Table, alias: &str) -> Vec<String> {
        let mut cols: Vec<String> = t.key.iter().map(|k| format!("{alias}.{k}")).collect();
        if let Some((c, _, _)) = t.numbers.get(self.rng.below(t.numbers.len())) {
            cols.push(format!("{alias}.{c}"));
        }
        if !t.categories.is_empty() {
            cols.push(format!("{alias}.{}", self.rng.pick(t.categories).0));
        }
        unique(cols)
    }

    fn filter_project(&mut self) -> String {
        let t = self.rng.pick(TABLES);
        let cols = self.columns(t, "t");
        let mut sql = format!(
            "SELECT {} FROM {} t WHERE {}",
            cols.join(", "),
            t.name,
            self.selective(t, "t")
        );
        if self.rng.chance(40) {
            let _ = write!(
                sql,
                " ORDER BY {} LIMIT {}",
                cols.join(", "),
                1 + self.rng.below(20)
            );
        }
        sql
    }

    fn join(&mut self) -> String {
        let &(a, a_col, b, b_col) = self.rng.pick(JOINS);
        let (ta, tb) = (table(a), table(b));
        let kind = *self.rng.pick(&[
            "JOIN",
            "LEFT JOIN",
            "RIGHT JOIN",
            "FULL OUTER JOIN",
            "LEFT SEMI JOIN",
            "LEFT ANTI JOIN",
        ]);
        let mut cols = self.columns(ta, "a");
        if !kind.contains("SEMI") && !kind.contains("ANTI") {
            cols.extend(self.columns(tb, "b"));
        }
        // A filter on the side an outer join keeps whole goes in ON.
        let on_extra = if self.rng.chance(30) {
            format!(" AND {}", self.predicate(tb, "b"))
        } else {
            String::new()
        };
        format!(
            "SELECT {} FROM {a} a {kind} {b} b ON a.{a_col} = b.{b_col}{on_extra} WHERE {}",
            cols.join(", "),
            self.selective(ta, "a")
        )
    }

    fn aggregate(&mut self) -> String {
        let (from, t, alias) = if self.rng.chance(40) {
            let &(a, a_col, b, b_col) = self.rng.pick(JOINS);
            (
                format!("{a} a JOIN {b} b ON a.{a_col} = b.{b_col}"),
                table(a),
                "a",
            )
        } else {
            let t = self.rng.pick(TABLES);
            (format!("{} a", t.name), t, "a")
        };
        let mut groups = vec![];
        if !t.categories.is_empty() {
            groups.push(format!("{alias}.{}", self.rng.pick(t.categories).0));
        }
        if groups.is_empty() || self.rng.chance(40) {
            let (c, _, _) = *self.rng.pick(t.numbers);
            groups.push(format!("{alias}.{c} % 5"));
        }
        groups.dedup();
        let (num, _, _) = *self.rng.pick(t.numbers);
        let aggs = [
            "count(*)".to_string(),
            format!("sum({alias}.{num})"),
            format!("min({alias}.{num})"),
            format!("max({alias}.{num})"),
            format!("count(DISTINCT {alias}.{num})"),
            format!("avg({alias}.{num})"),
            format!("sum({alias}.{num}) FILTER (WHERE {alias}.{num} % 2 = 0)"),
            format!("bool_and({alias}.{num} > 0)"),
        ];
        let chosen = unique(
            (0..1 + self.rng.below(3))
                .map(|_| self.rng.pick(&aggs).clone())
                .collect(),
        );
        let g = groups.join(", ");
        let group_by = match self.rng.below(5) {
            0 => format!("ROLLUP ({g})"),
            1 => format!("CUBE ({g})"),
            2 => format!("GROUPING SETS (({g}), ())"),
            _ => g.clone(),
        };
        let mut sql = format!(
            "SELECT {g}, {} FROM {from} WHERE {} GROUP BY {group_by}",
            chosen.join(", "),
            self.selective(t, alias)
        );
        if self.rng.chance(30) {
            let _ = write!(sql, " HAVING count(*) > {}", self.rng.below(5));
        }
        sql
    }

    fn window(&mut self) -> String {
        let t = self.rng.pick(TABLES);
        let key = t.key.iter().map(|k| format!("t.{k}")).collect::<Vec<_>>();
        let (num, _, _) = *self.rng.pick(t.numbers);
        let partition = match t.categories.first() {
            Some((c, _)) if self.rng.chance(70) => format!("PARTITION BY t.{c} "),
            _ => String::new(),
        };
        let order = format!("ORDER BY t.{num}, {}", key.join(", "));
        let frame = *self.rng.pick(&[
            "",
            " ROWS BETWEEN 2 PRECEDING AND CURRENT ROW",
            " ROWS BETWEEN UNBOUNDED PRECEDING AND 1 FOLLOWING",
            " RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW",
        ]);
        let function = match self.rng.below(7) {
            0 => "row_number()".to_string(),
            1 => "rank()".to_string(),
            2 => format!("sum(t.{num})"),
            3 => format!("lag(t.{num}, 1)"),
            4 => format!("lead(t.{num}, 2)"),
            5 => format!("first_value(t.{num})"),
            _ => "count(*)".to_string(),
        };
        let framed = matches!(function.as_str(), f if f.starts_with("sum") || f.starts_with("count") || f.starts_with("first"));
        let mut cols = key.clone();
        cols.push(format!("t.{num}"));
        // A second window over the opposite order: DataFusion then evaluates
        // one of the two reversed instead of sorting twice.
        let reversed = if self.rng.chance(30) {
            let desc = key.iter().map(|k| format!("{k} DESC")).collect::<Vec<_>>();
            format!(
                ", count(*) OVER ({partition}ORDER BY t.{num} DESC, {} \
                 ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS w2",
                desc.join(", ")
            )
        } else {
            String::new()
        };
        format!(
            "SELECT {}, {function} OVER ({partition}{order}{}) AS w{reversed} FROM {} t WHERE {}",
            unique(cols).join(", "),
            if framed { frame } else { "" },
            t.name,
            self.selective(t, "t")
        )
    }

    fn set_operation(&mut self) -> String {
        let t = self.rng.pick(TABLES);
        let (num, _, _) = *self.rng.pick(t.numbers);
        let op = *self
            .rng
            .pick(&["UNION", "UNION ALL", "INTERSECT", "EXCEPT"]);
        format!(
            "SELECT t.{num} FROM {} t WHERE {} {op} SELECT t.{num} FROM {} t WHERE {}",
            t.name,
            self.selective(t, "t"),
            t.name,
            self.selective(t, "t")
        )
    }

    fn subquery(&mut self) -> String {
        let &(a, a_col, b, b_col) = self.rng.pick(JOINS);
        let (ta, tb) = (table(a), table(b));
        let cols = self.columns(tb, "b");
        match self.rng.below(3) {
            0 => format!(
                "SELECT {} FROM {b} b WHERE b.{b_col} {}IN (SELECT a.{a_col} FROM {a} a WHERE {}) AND {}",
                cols.join(", "),
                if self.rng.chance(30) { "NOT " } else { "" },
                self.selective(ta, "a"),
                self.filter(tb, "b")
            ),
            1 => format!(
                "SELECT {} FROM {b} b WHERE {}EXISTS (SELECT 1 FROM {a} a WHERE a.{a_col} = b.{b_col} AND {}) AND {}",
                cols.join(", "),
                if self.rng.chance(40) { "NOT " } else { "" },
                self.filter(ta, "a"),
                self.filter(tb, "b")
            ),
            _ => {
                let (num, _, _) = *self.rng.pick(ta.numbers);
                format!(
                    "SELECT {}, (SELECT max(a.{num}) FROM {a} a WHERE a.{a_col} = b.{b_col}) AS m FROM {b} b WHERE {}",
                    cols.join(", "),
                    self.selective(tb, "b")
                )
            }
        }
    }

    fn nested(&mut self) -> String {
        let t = self.rng.pick(TABLES);
        let key = format!("t.{}", t.key[0]);
        let (num, _, _) = *self.rng.pick(t.numbers);
        match (self.rng.below(3), t.categories.first()) {
            (0, Some((c, _))) => format!(
                "SELECT t.{c}, array_agg({key} ORDER BY {key}) AS keys, \
                 array_length(array_agg(t.{num} ORDER BY {key})) AS n FROM {} t WHERE {} GROUP BY t.{c}",
                t.name,
                self.selective(t, "t")
            ),
            (1, _) => format!(
                "SELECT {key}, named_struct('k', {key}, 'v', t.{num}) AS s, \
                 make_array(t.{num}, t.{num} + 1)[2] AS second FROM {} t WHERE {}",
                t.name,
                self.selective(t, "t")
            ),
            _ => format!(
                "SELECT {key}, unnest(make_array(t.{num}, {key})) AS u FROM {} t WHERE {}",
                t.name,
                self.selective(t, "t")
            ),
        }
    }
}

/// Runs `count` queries of seed `seed` through `engines` (whose sessions
/// have the TPC-H tables).
pub async fn run(engines: &crate::Engines, seed: u64, count: usize) -> crate::Report {
    let mut generator = Generator::new(seed);
    let mut report = crate::Report::default();
    for i in 0..count {
        let sql = generator.query();
        let verdict = engines.check(&sql).await;
        if verdict == crate::Verdict::BothFailed
            && std::env::var_os("EMBER_DIFFTEST_DEBUG").is_some()
        {
            let (df, _) = engines.run(&sql).await;
            eprintln!("both failed: {sql}\n  {df:?}");
        }
        report.record("random", format!("seed {seed} query {i}"), &sql, verdict);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_queries_and_seeds_differ() {
        let a: Vec<String> = (0..20)
            .scan(Generator::new(7), |g, _| Some(g.query()))
            .collect();
        let b: Vec<String> = (0..20)
            .scan(Generator::new(7), |g, _| Some(g.query()))
            .collect();
        let c: Vec<String> = (0..20)
            .scan(Generator::new(8), |g, _| Some(g.query()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn every_shape_is_generated() {
        let mut g = Generator::new(1);
        let all: String = (0..400).map(|_| g.query() + "\n").collect();
        for shape in [
            "LEFT ANTI JOIN",
            "FULL OUTER JOIN",
            "ROLLUP",
            "CUBE",
            "GROUPING SETS",
            "HAVING",
            " OVER (",
            "ROWS BETWEEN",
            "INTERSECT",
            "EXCEPT",
            "NOT EXISTS",
            "IN (SELECT",
            "array_agg",
            "named_struct",
            "unnest",
            "LIMIT",
        ] {
            assert!(all.contains(shape), "{shape} never generated");
        }
    }
}
