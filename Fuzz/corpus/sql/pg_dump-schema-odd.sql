--
-- PostgreSQL database dump
--

\restrict WX2hsAQVaZ1NCEUpR7H7w4Q4WEaKYWfTsHNtMTIydIIOGBqw8VE4wpopnhOw3w8

-- Dumped from database version 15.20 (Debian 15.20-0+deb12u1)
-- Dumped by pg_dump version 15.20 (Debian 15.20-0+deb12u1)

SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

--
-- Name: My Schema; Type: SCHEMA; Schema: -; Owner: postgres
--

CREATE SCHEMA "My Schema";


ALTER SCHEMA "My Schema" OWNER TO postgres;

--
-- Name: public; Type: SCHEMA; Schema: -; Owner: pg_database_owner
--

CREATE SCHEMA public;


ALTER SCHEMA public OWNER TO pg_database_owner;

--
-- Name: SCHEMA public; Type: COMMENT; Schema: -; Owner: pg_database_owner
--

COMMENT ON SCHEMA public IS 'standard public schema';


--
-- Name: mood; Type: TYPE; Schema: public; Owner: postgres
--

CREATE TYPE public.mood AS ENUM (
    'sad',
    'ok'
);


ALTER TYPE public.mood OWNER TO postgres;

--
-- Name: f(integer); Type: FUNCTION; Schema: public; Owner: postgres
--

CREATE FUNCTION public.f(x integer) RETURNS integer
    LANGUAGE sql
    AS $$ select x + 1 $$;


ALTER FUNCTION public.f(x integer) OWNER TO postgres;

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: weird name; drop; Type: TABLE; Schema: My Schema; Owner: postgres
--

CREATE TABLE "My Schema"."weird name; drop" (
    id integer NOT NULL,
    t timestamp with time zone DEFAULT now() NOT NULL,
    note text
);


ALTER TABLE "My Schema"."weird name; drop" OWNER TO postgres;

--
-- Name: weird name; drop_id_seq; Type: SEQUENCE; Schema: My Schema; Owner: postgres
--

CREATE SEQUENCE "My Schema"."weird name; drop_id_seq"
    AS integer
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE "My Schema"."weird name; drop_id_seq" OWNER TO postgres;

--
-- Name: weird name; drop_id_seq; Type: SEQUENCE OWNED BY; Schema: My Schema; Owner: postgres
--

ALTER SEQUENCE "My Schema"."weird name; drop_id_seq" OWNED BY "My Schema"."weird name; drop".id;


--
-- Name: m; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.m (
    t timestamp with time zone NOT NULL,
    v integer
);


ALTER TABLE public.m OWNER TO postgres;

--
-- Name: child; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.child (
    id integer NOT NULL,
    parent_id integer
);


ALTER TABLE public.child OWNER TO postgres;

--
-- Name: mv; Type: MATERIALIZED VIEW; Schema: public; Owner: postgres
--

CREATE MATERIALIZED VIEW public.mv AS
 SELECT count(*) AS count
   FROM public.child
  WITH NO DATA;


ALTER TABLE public.mv OWNER TO postgres;

--
-- Name: parent; Type: TABLE; Schema: public; Owner: postgres
--

CREATE TABLE public.parent (
    id integer NOT NULL,
    child_id integer
);


ALTER TABLE public.parent OWNER TO postgres;

--
-- Name: TABLE parent; Type: COMMENT; Schema: public; Owner: postgres
--

COMMENT ON TABLE public.parent IS 'has; semicolons';


--
-- Name: s; Type: SEQUENCE; Schema: public; Owner: postgres
--

CREATE SEQUENCE public.s
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;


ALTER TABLE public.s OWNER TO postgres;

--
-- Name: v; Type: VIEW; Schema: public; Owner: postgres
--

CREATE VIEW public.v AS
 SELECT parent.id,
    parent.child_id
   FROM public.parent;


ALTER TABLE public.v OWNER TO postgres;

--
-- Name: weird name; drop id; Type: DEFAULT; Schema: My Schema; Owner: postgres
--

ALTER TABLE ONLY "My Schema"."weird name; drop" ALTER COLUMN id SET DEFAULT nextval('"My Schema"."weird name; drop_id_seq"'::regclass);


--
-- Name: weird name; drop weird name; drop_pkey; Type: CONSTRAINT; Schema: My Schema; Owner: postgres
--

ALTER TABLE ONLY "My Schema"."weird name; drop"
    ADD CONSTRAINT "weird name; drop_pkey" PRIMARY KEY (id);


--
-- Name: child child_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.child
    ADD CONSTRAINT child_pkey PRIMARY KEY (id);


--
-- Name: parent parent_pkey; Type: CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.parent
    ADD CONSTRAINT parent_pkey PRIMARY KEY (id);


--
-- Name: m_t_idx; Type: INDEX; Schema: public; Owner: postgres
--

CREATE INDEX m_t_idx ON public.m USING btree (t DESC);


--
-- Name: m ts_insert_blocker; Type: TRIGGER; Schema: public; Owner: postgres
--

CREATE TRIGGER ts_insert_blocker BEFORE INSERT ON public.m FOR EACH ROW EXECUTE FUNCTION _timescaledb_functions.insert_blocker();


--
-- Name: child child_parent_id_fkey; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.child
    ADD CONSTRAINT child_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES public.parent(id);


--
-- Name: parent parent_child_fk; Type: FK CONSTRAINT; Schema: public; Owner: postgres
--

ALTER TABLE ONLY public.parent
    ADD CONSTRAINT parent_child_fk FOREIGN KEY (child_id) REFERENCES public.child(id);


--
-- PostgreSQL database dump complete
--

\unrestrict WX2hsAQVaZ1NCEUpR7H7w4Q4WEaKYWfTsHNtMTIydIIOGBqw8VE4wpopnhOw3w8

