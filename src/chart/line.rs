//! The line of one series as runs of finite points, decimated per pixel column (M4).

/// The first, lowest, highest and last point of one pixel column, in record order.
struct Column {
    key: usize,
    first: (usize, f64, f64),
    low: (usize, f64, f64),
    high: (usize, f64, f64),
    last: (usize, f64, f64),
}

impl Column {
    fn new(key: usize, point: (usize, f64, f64)) -> Self {
        Self {
            key,
            first: point,
            low: point,
            high: point,
            last: point,
        }
    }

    fn add(&mut self, point: (usize, f64, f64)) {
        if point.2 < self.low.2 {
            self.low = point;
        }
        if point.2 > self.high.2 {
            self.high = point;
        }
        self.last = point;
    }

    fn flush(&self, out: &mut Vec<(f64, f64)>) {
        let mut points = [self.first, self.low, self.high, self.last];
        points.sort_by_key(|p| p.0);
        let mut previous = None;
        for (pos, x, y) in points {
            if previous != Some(pos) {
                out.push((x, y));
                previous = Some(pos);
            }
        }
    }
}

/// The line of one series as runs of finite points in x order. With `columns`, points are
/// reduced per pixel column (see the `chart` module docs); a run breaks wherever a non-finite
/// value lies between two columns, gaps inside one column being narrower than a pixel.
pub(super) fn line_runs(
    points: impl Iterator<Item = (f64, f64)>,
    x_range: (f64, f64),
    columns: Option<usize>,
) -> Vec<Vec<(f64, f64)>> {
    let (x_lo, x_hi) = x_range;
    let mut runs = Vec::new();
    let mut run = Vec::new();
    let mut column: Option<Column> = None;
    let mut gap = false;
    for (pos, (x, y)) in points.enumerate() {
        if !y.is_finite() {
            gap = true;
            continue;
        }
        let key = match columns {
            Some(cols) => {
                let frac = (x - x_lo) / (x_hi - x_lo);
                ((frac * cols as f64).floor().max(0.0) as usize).min(cols.saturating_sub(1))
            }
            None => pos,
        };
        match column.as_mut() {
            Some(c) if c.key == key => c.add((pos, x, y)),
            _ => {
                if let Some(done) = column.take() {
                    done.flush(&mut run);
                }
                if gap && !run.is_empty() {
                    runs.push(std::mem::take(&mut run));
                }
                column = Some(Column::new(key, (pos, x, y)));
            }
        }
        gap = false;
    }
    if let Some(done) = column {
        done.flush(&mut run);
    }
    if !run.is_empty() {
        runs.push(run);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn decimation_keeps_extremes_order_and_gaps() {
        let points: Vec<(f64, f64)> = (0..1000)
            .map(|i| (i as f64, if i == 500 { f64::NAN } else { (i % 7) as f64 }))
            .chain([(1000.0, 100.0)])
            .collect();
        let runs = line_runs(points.iter().copied(), (0.0, 1000.0), Some(10));
        let total: usize = runs.iter().map(Vec::len).sum();
        assert!(
            total <= 4 * 10,
            "at most four points per column, got {total}"
        );
        assert!(
            runs.iter().flatten().any(|p| p.1 == 100.0),
            "the peak survives"
        );
        assert!(
            runs.iter().flatten().any(|p| p.1 == 6.0) && runs.iter().flatten().any(|p| p.1 == 0.0)
        );
        for run in &runs {
            assert!(run.windows(2).all(|w| w[0].0 <= w[1].0), "x order kept");
        }
        // Without decimation a NaN splits the line.
        let runs = line_runs(points.iter().copied(), (0.0, 1000.0), None);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs.iter().map(Vec::len).sum::<usize>(), 1000);
    }
}
