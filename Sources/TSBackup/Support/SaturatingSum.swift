extension Sequence {
    /// The sum of `value` over the elements, held at the type's bounds instead of trapping on
    /// overflow.
    ///
    /// Sizes and counts summed from a manifest are whatever the repository says. A damaged or
    /// hostile manifest (two files of 2^63-1 bytes) must make a useless total, not crash `list`,
    /// `show` or verify (Fuzz/corpus/manifest/regression-*).
    public func saturatingSum<Number: FixedWidthInteger>(_ value: (Element) -> Number) -> Number {
        var total: Number = 0
        for element in self {
            let next = value(element)
            let (sum, overflow) = total.addingReportingOverflow(next)
            total = overflow ? (next > 0 ? .max : .min) : sum
        }
        return total
    }
}
