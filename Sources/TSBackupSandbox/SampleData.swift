import TSBackup

/// A deterministic metrics/IoT schema with data, for the demo, tests and benchmarks.
///
/// - `public.devices`: plain table, primary key.
/// - `public.conditions`: hypertable on `time` (timestamptz) with a foreign key to `devices` and an
///   extra index; `devices x days x readingsPerDay` rows, one chunk per `chunkInterval`.
/// - `public.events`: hypertable on an integer column (`seq`), `eventsPerChunk` wide chunks.
/// - `iot.readings`: hypertable on `time` (7-day chunks) plus a hash space dimension on `sensor_id`,
///   with a UNIQUE constraint.
/// - `public.conditions_daily`: a view using `time_bucket`.
///
/// Every value is a function of its row's position (no `random()`), so two runs with the same
/// options produce identical databases.
public struct SampleData: Sendable {
    public struct Options: Sendable, Equatable {
        public var devices: Int
        public var days: Int
        /// Readings per device and day in `conditions` (24 = hourly).
        public var readingsPerDay: Int
        /// Chunk interval of `conditions`, as a PostgreSQL interval ("1 day", "1 hour").
        public var chunkInterval: String
        /// Rows in `events` and its integer chunk width.
        public var events: Int
        public var eventsPerChunk: Int
        /// Sensors in `iot.readings` (readings every 6 hours) and hash partitions.
        public var sensors: Int
        public var spacePartitions: Int
        /// Characters of filler text per `conditions` row, for wide-row scenarios.
        public var noteLength: Int

        public init(devices: Int = 10, days: Int = 30, readingsPerDay: Int = 24, chunkInterval: String = "1 day",
                    events: Int = 2_000, eventsPerChunk: Int = 250, sensors: Int = 8, spacePartitions: Int = 2,
                    noteLength: Int = 0) {
            self.devices = devices
            self.days = days
            self.readingsPerDay = readingsPerDay
            self.chunkInterval = chunkInterval
            self.events = events
            self.eventsPerChunk = eventsPerChunk
            self.sensors = sensors
            self.spacePartitions = spacePartitions
            self.noteLength = noteLength
        }

        /// A few chunks per hypertable; fast enough for every test.
        public static let small = Options(devices: 4, days: 21, readingsPerDay: 24, chunkInterval: "1 day",
                                          events: 1_000, eventsPerChunk: 100, sensors: 4, spacePartitions: 2)
    }

    /// What the generator put into the database, for tests to compare against.
    public struct Summary: Sendable, Equatable {
        public var devices: Int
        public var conditionsRows: Int
        public var eventsRows: Int
        public var readingsRows: Int
    }

    public var options: Options

    public init(_ options: Options = Options()) {
        self.options = options
    }

    /// The first reading's time; fixed so data and chunk boundaries never depend on the clock.
    public static let epoch = "2026-01-01 00:00:00+00"

    public var expected: Summary {
        Summary(
            devices: options.devices,
            conditionsRows: options.devices * options.days * options.readingsPerDay,
            eventsRows: options.events,
            readingsRows: options.sensors * options.days * 4)
    }

    /// The statements, one per element, in order.
    public var statements: [String] {
        let o = options
        let step = 86_400 / max(1, o.readingsPerDay)
        let note = o.noteLength > 0
            ? "rpad(md5(d::text || ':' || g::text), \(o.noteLength), md5(g::text))"
            : "CASE WHEN g % 97 = 0 THEN 'maintenance' END"
        return [
            "CREATE SCHEMA IF NOT EXISTS iot",
            """
            CREATE TABLE public.devices (
                id integer PRIMARY KEY,
                name text NOT NULL UNIQUE,
                location text NOT NULL,
                installed_at timestamptz NOT NULL
            )
            """,
            """
            INSERT INTO public.devices
            SELECT d, 'device-' || lpad(d::text, 4, '0'), (ARRAY['north', 'south', 'east', 'west'])[1 + d % 4],
                   timestamptz '\(Self.epoch)' - make_interval(days => d)
            FROM generate_series(1, \(o.devices)) d
            """,
            """
            CREATE TABLE public.conditions (
                time timestamptz NOT NULL,
                device_id integer NOT NULL REFERENCES public.devices (id),
                temperature double precision NOT NULL,
                humidity double precision,
                battery smallint NOT NULL DEFAULT 100,
                note text
            )
            """,
            "SELECT create_hypertable('public.conditions', 'time', chunk_time_interval => interval '\(o.chunkInterval)')",
            "CREATE INDEX conditions_device_time_idx ON public.conditions (device_id, time DESC)",
            "COMMENT ON TABLE public.conditions IS 'Readings from every device'",
            """
            INSERT INTO public.conditions (time, device_id, temperature, humidity, battery, note)
            SELECT timestamptz '\(Self.epoch)' + make_interval(secs => g * \(step)), d,
                   round((20 + 8 * sin(g / 12.0) + d % 7)::numeric, 2)::float8,
                   CASE WHEN (g + d) % 50 = 0 THEN NULL ELSE round((55 + 20 * cos(g / 30.0 + d))::numeric, 1)::float8 END,
                   (100 - (g / \(max(1, o.readingsPerDay))) % 100)::smallint,
                   \(note)
            FROM generate_series(1, \(o.devices)) d, generate_series(0, \(o.days * o.readingsPerDay - 1)) g
            """,
            """
            CREATE TABLE public.events (
                seq bigint NOT NULL,
                device_id integer NOT NULL,
                kind text NOT NULL,
                payload jsonb
            )
            """,
            "SELECT create_hypertable('public.events', 'seq', chunk_time_interval => \(o.eventsPerChunk)::bigint)",
            """
            INSERT INTO public.events
            SELECT s, 1 + s % \(max(1, o.devices)), (ARRAY['boot', 'alarm', 'update', 'heartbeat'])[1 + s % 4],
                   jsonb_build_object('level', s % 5, 'message', 'event ' || s)
            FROM generate_series(0, \(o.events - 1)) s
            """,
            """
            CREATE TABLE iot.readings (
                time timestamptz NOT NULL,
                sensor_id integer NOT NULL,
                value double precision NOT NULL,
                UNIQUE (sensor_id, time)
            )
            """,
            "SELECT create_hypertable('iot.readings', 'time', chunk_time_interval => interval '7 days')",
            "SELECT add_dimension('iot.readings', 'sensor_id', number_partitions => \(o.spacePartitions))",
            """
            INSERT INTO iot.readings
            SELECT timestamptz '\(Self.epoch)' + make_interval(hours => h * 6), s, round((s * 10 + cos(h))::numeric, 3)::float8
            FROM generate_series(1, \(o.sensors)) s, generate_series(0, \(o.days * 4 - 1)) h
            """,
            """
            CREATE VIEW public.conditions_daily AS
            SELECT time_bucket('1 day', time) AS day, device_id, avg(temperature) AS avg_temperature, count(*) AS readings
            FROM public.conditions GROUP BY 1, 2
            """,
            "ANALYZE",
        ]
    }

    /// Creates the schema and data in the database `session` is connected to (TimescaleDB must be
    /// installed there).
    @discardableResult
    public func load(into session: DatabaseSession) async throws -> Summary {
        for statement in statements {
            try await session.execute(statement)
        }
        return expected
    }
}
