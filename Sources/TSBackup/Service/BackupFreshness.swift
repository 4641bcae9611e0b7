import Foundation

/// How fresh a database's last good backup is against its schedule: the dashboard's
/// green/amber/red.
///
/// With an expected interval `i` (the schedule's period; a day when there is no schedule):
/// green while the age is at most `1.5 i` plus ten minutes of grace (one slot may be running
/// late), amber up to `3 i` (one slot missed), red beyond that or when there is no good backup
/// at all.
public enum BackupFreshness: String, Sendable, Codable, Equatable {
    case green, amber, red

    /// Grace for a backup that is running or just finished late.
    public static let grace: TimeInterval = 600

    public static func classify(lastGood: Date?, now: Date, interval: TimeInterval?) -> BackupFreshness {
        guard let lastGood else { return .red }
        let expected = max(1, interval ?? 86_400)
        let age = now.timeIntervalSince(lastGood)
        if age <= expected * 1.5 + grace { return .green }
        if age <= expected * 3 + grace { return .amber }
        return .red
    }

    /// Words for the colour, so the state never depends on colour alone.
    public var label: String {
        switch self {
        case .green: "OK"
        case .amber: "LATE"
        case .red: "STALE"
        }
    }

    /// A short age such as "45s", "12m", "3h 5m", "2d 4h".
    public static func formatAge(_ seconds: TimeInterval) -> String {
        let s = max(0, Int(seconds))
        if s < 60 { return "\(s)s" }
        if s < 3600 { return "\(s / 60)m" }
        if s < 86_400 { return "\(s / 3600)h \(s % 3600 / 60)m" }
        return "\(s / 86_400)d \(s % 86_400 / 3600)h"
    }
}
