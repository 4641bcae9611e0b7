--
-- PostgreSQL database dump
--

\restrict mvpuvukYCu13yfCjTKcKbCIgOAaZIbjOOnSiYGbMHIDDBlMQ0dauUzoV9FmWvCN

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

SET default_tablespace = '';

SET default_table_access_method = heap;

--
-- Name: conditions; Type: TABLE; Schema: public; Owner: app_owner
--

CREATE TABLE public.conditions (
    "time" timestamp with time zone NOT NULL,
    device text,
    temp double precision,
    CONSTRAINT temp_range CHECK ((temp > ('-100'::integer)::double precision))
);


ALTER TABLE public.conditions OWNER TO app_owner;

--
-- Name: conditions_device_time_idx; Type: INDEX; Schema: public; Owner: app_owner
--

CREATE INDEX conditions_device_time_idx ON public.conditions USING btree (device, "time" DESC);


--
-- Name: conditions_time_idx; Type: INDEX; Schema: public; Owner: app_owner
--

CREATE INDEX conditions_time_idx ON public.conditions USING btree ("time" DESC);


--
-- Name: TABLE conditions; Type: ACL; Schema: public; Owner: app_owner
--

GRANT SELECT ON TABLE public.conditions TO "reporting ro";


--
-- PostgreSQL database dump complete
--

\unrestrict mvpuvukYCu13yfCjTKcKbCIgOAaZIbjOOnSiYGbMHIDDBlMQ0dauUzoV9FmWvCN

