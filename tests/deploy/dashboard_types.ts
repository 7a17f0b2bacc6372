// The type every dashboard under deploy/grafana/dashboards must satisfy:
// Grafana's own Dashboard type from @grafana/schema, as JSON can carry it.
// dashboard_check.sh writes `export const d = <the JSON> satisfies
// SpotterDashboard;` after this file and compiles it with tsc --strict, so
// unknown properties, missing required ones and wrong types all fail.
import type { AnnotationContainer, AnnotationQuery, Dashboard, DataQuery } from '@grafana/schema';

// JSON carries an enum's values, never its members ("value", not
// MappingType.ValueToText): T with every string enum replaced by the union of
// its values, recursively. Everything else is left as it is.
type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends ReadonlyArray<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

// A Prometheus query: the annotation query type that Dashboard leaves generic
// (AnnotationQuery<TQuery extends DataQuery = DataQuery>).
interface PrometheusQuery extends DataQuery {
  expr: string;
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  interval?: string;
}

type SpotterDashboard = Json<
  Omit<Dashboard, 'annotations'> & {
    annotations?: Omit<AnnotationContainer, 'list'> & {
      list?: Array<AnnotationQuery<PrometheusQuery>>;
    };
  }
>;
