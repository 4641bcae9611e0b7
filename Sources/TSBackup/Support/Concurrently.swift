/// Runs `body` on every element, at most `limit` at a time; results in input order. The first
/// error cancels the rest.
enum Concurrently {
    static func map<Element: Sendable, Output: Sendable>(
        _ elements: [Element], limit: Int, _ body: @escaping @Sendable (Element) async throws -> Output
    ) async throws -> [Output] {
        try await withThrowingTaskGroup(of: (Int, Output).self) { group in
            var results = [Output?](repeating: nil, count: elements.count)
            var next = 0
            func start() {
                let index = next
                let element = elements[index]
                group.addTask { (index, try await body(element)) }
                next += 1
            }
            while next < min(limit, elements.count) { start() }
            while let (index, output) = try await group.next() {
                results[index] = output
                if next < elements.count { start() }
            }
            return results.map { $0! }
        }
    }
}
